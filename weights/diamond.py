"""Import of DIAMOND agent checkpoints (`agent_epoch_*.pt`, the Hub's `atari_100k/models/{Game}.pt`).

A DIAMOND checkpoint is `torch.save(agent.state_dict())`: a flat dict of float32 tensors under the
prefixes `denoiser.`, `rew_end_model.` and `actor_critic.` (reference/diamond.md section 2). Our
module names are DIAMOND's except `rew_end_model.` -> `rew_end.`. The file is read with
`torch.load(weights_only=True)`, which refuses pickled code, and must match the reference Atari
configuration exactly: every key used, every shape checked, the number of actions read from it.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from weights.errors import NotFound, UserError
from weights.format import build_agent

ACT_EMB_KEY = "denoiser.inner_model.act_emb.0.weight"  # (num_actions, 64): the action count
_RENAMES = (("rew_end_model.", "rew_end."),)  # DIAMOND prefix -> ours


def to_our_key(key: str) -> str:
    for theirs, ours in _RENAMES:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def to_diamond_key(key: str) -> str:
    for theirs, ours in _RENAMES:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def read_diamond_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The raw state dict (DIAMOND key names) of a `.pt` agent checkpoint, loaded on CPU.

    Never unpickles code: a file holding anything but tensors and plain containers is refused
    (UserError), as is a truncated or corrupt file; the message names the file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFound(f"{path}: no such checkpoint file")
    _check_torch_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            raise UserError(
                f"{path}: refused: the checkpoint contains pickled Python objects other than tensors "
                "(loading it could run code); only plain agent state dicts are loaded"
            ) from None
        raise UserError(f"{path}: not a valid PyTorch checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"{path}: not a valid PyTorch checkpoint: truncated or corrupt ({_first_line(e)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{path}: not a DIAMOND agent checkpoint (expected a dict of tensors, got {type(state).__name__})")
    return state


def _check_torch_file(path: Path) -> None:
    """ValueError saying what the file is when it is not a torch checkpoint at all (torch.load would call
    any such file "pickled objects other than tensors")."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip format
        return
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # a pickle (torch's legacy format)
        return
    if not head:
        raise UserError(f"{path}: not a valid PyTorch checkpoint: the file is empty")
    if len(head) > 8 and head[8:9] == b"{":
        raise UserError(f"{path}: a safetensors file, not a PyTorch checkpoint: name it .safetensors")
    raise UserError(f"{path}: not a PyTorch checkpoint (zip or pickle) nor a safetensors file: "
                     f"it starts with bytes {head[:8].hex(' ')}")


def diamond_num_actions(state: dict, where: str) -> int:
    """The number of actions of a DIAMOND state dict, read from the denoiser's action embedding."""
    weight = state.get(ACT_EMB_KEY)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise UserError(f"{where}: missing key {ACT_EMB_KEY} (needed for the number of actions); "
                         "not a DIAMOND agent checkpoint?")
    return int(weight.shape[0])


def rename_diamond_state_dict(state: dict, where: str) -> dict[str, torch.Tensor]:
    """A DIAMOND state dict under our module names (`rew_end_model.` -> `rew_end.`)."""
    renamed = {to_our_key(k): v for k, v in state.items()}
    if len(renamed) != len(state):
        raise UserError(f"{where}: holds both rew_end_model.* and rew_end.* keys")
    return renamed


def load_diamond_agent(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A model.Agent (reference Atari size, eval mode) with the weights of a DIAMOND `.pt` checkpoint.

    Raises UserError naming the file and the key for a missing, extra or misshaped key.
    """
    where = str(Path(path).expanduser())
    return agent_from_diamond_state(read_diamond_checkpoint(path), where).to(device).eval()


def agent_from_diamond_state(state: dict, where: str):
    """A model.Agent (reference Atari size) holding a DIAMOND state dict; errors name `where` and
    the key as DIAMOND spells it."""
    from model import presets

    config = presets.atari100k(diamond_num_actions(state, where))
    return build_agent(config, rename_diamond_state_dict(state, where), where, name=to_diamond_key)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
