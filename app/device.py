"""The torch device a command runs on: the best one present (CUDA, then Apple's MPS, then the CPU)
unless `--device` names one. Users of the reference found it silently ran on the CPU beside a GPU, so
`play`, `eval` and `train` print the device they chose in their first line (and the player's HUD shows it).
"""
from __future__ import annotations

import torch

from weights.errors import UserError


def best_device() -> torch.device:
    """CUDA if this torch sees a CUDA device, else MPS if available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(name: str | None) -> torch.device:
    """The device named by `--device` (None or "auto": `best_device()`).

    Raises ValueError for a name torch does not know or a device this machine does not have.
    """
    if name is None or name == "auto":
        return best_device()
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: this torch has no CUDA device; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--device {name}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: dreamarcade runs on cpu, cuda or mps")
    return dev


def describe_device(dev: torch.device, asked: str | None) -> str:
    """One line for the start of a command's output, e.g. 'device: cuda (NVIDIA H100, the best found)'."""
    if dev.type == "cuda":
        what = torch.cuda.get_device_name(dev)
    elif dev.type == "mps":
        what = "Apple GPU"
    else:
        threads = torch.get_num_threads()
        what = f"{threads} thread{'s' if threads > 1 else ''}"
    why = "as asked" if asked not in (None, "auto") else (
        "the best found" if dev.type != "cpu" else "no CUDA or MPS device found")
    return f"device: {dev} ({what}, {why})"
