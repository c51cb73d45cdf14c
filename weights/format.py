"""dreamarcade's weights format: one safetensors file whose metadata header makes it self-describing.

A weights directory holds `agent.safetensors` (plus, optionally, a model card `README.md` and
`config.json`). The safetensors metadata (all strings) holds:

    format          "dreamarcade-agent"
    format_version  "1"
    agent_config    model.AgentConfig.to_dict() as JSON
    num_actions     the number of actions, also readable from the config
    dtype           dtype the tensors were stored in ("float32", or "float16"/"bfloat16" for shipping)
    info            JSON object: game, source, training steps... (whatever the writer passed as metadata)

Every check on load gives a `UserError` naming the file and what is wrong; float16/bfloat16 files
come back as float32.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from weights.atomic import atomic_write
from weights.errors import NotFound, UserError

FORMAT_NAME = "dreamarcade-agent"
FORMAT_VERSION = 1
WEIGHTS_FILENAME = "agent.safetensors"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit


def weights_file(path: str | os.PathLike) -> Path:
    """The safetensors file of a weights directory or file path (no existence check for files)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILENAME, path / "weights" / WEIGHTS_FILENAME):  # a dir, or a run dir
            if candidate.is_file():
                return candidate
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return found[0]
        raise NotFound(
            f"{path}: not a dreamarcade weights directory (no {WEIGHTS_FILENAME}"
            + (f"; found {', '.join(p.name for p in found)}" if found else "") + ")"
        )
    return path


def save_agent(agent, path: str | os.PathLike, metadata: dict | None = None, dtype: str = "float32",
               state: dict | None = None) -> Path:
    """Write `agent` (a model.Agent) to `path` atomically (temporary file, then rename).

    `path` ending in `.safetensors` is the file itself; anything else is a weights directory that
    receives `agent.safetensors`. `metadata` (JSON-safe dict: game, source, steps...) is stored in the
    header under `info`. `dtype` "float16"/"bfloat16" halves the file for shipping; loading gives float32.
    `state`: the tensors to write instead of `agent.state_dict()` (a snapshot taken earlier, same keys).
    Returns the path of the file written.
    """
    if dtype not in _DTYPES:
        raise UserError(f"dtype must be one of {sorted(_DTYPES)}, not {dtype!r}")
    path = Path(path).expanduser()
    file = path if path.suffix == ".safetensors" else path / WEIGHTS_FILENAME
    file.parent.mkdir(parents=True, exist_ok=True)
    info = dict(metadata or {})
    header = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "agent_config": json.dumps(agent.config.to_dict(), sort_keys=True),
        "num_actions": str(agent.num_actions),
        "dtype": dtype,
        "info": json.dumps(info, sort_keys=True, default=str),
    }
    tensors = {}
    for key, value in (agent.state_dict() if state is None else state).items():
        value = value.detach().to("cpu")
        if value.is_floating_point() and dtype != "float32":
            half = value.to(_DTYPES[dtype])
            if not torch.isfinite(half).all() and torch.isfinite(value).all():
                raise UserError(f"{key} has values outside the {dtype} range; save it as bfloat16 or float32")
            value = half
        tensors[key] = value.contiguous().clone()  # clone: safetensors refuses shared storage
    atomic_write(file, lambda f: f.write(save(tensors, metadata=header)))
    return file


def read_header(file: str | os.PathLike) -> tuple[dict, dict]:
    """Parse and check a safetensors file's header without reading tensor data.

    Returns (metadata, tensor_specs) where tensor_specs maps key -> {"dtype", "shape", "data_offsets"}.
    Raises UserError naming the file for truncated, corrupt or non-safetensors files.
    """
    file = Path(file)
    if not file.is_file():
        raise NotFound(f"{file}: no such weights file")
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise UserError(f"{file}: not a safetensors file (only {size} bytes; truncated?)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise UserError(
                f"{file}: not a valid safetensors file (header claims {header_len} bytes, file has {size}; "
                "truncated or not safetensors)"
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{file}: corrupt safetensors header ({e})") from None
    metadata = header.pop("__metadata__", None) or {}
    data_end = 0
    for key, spec in header.items():
        try:
            start, end = spec["data_offsets"]
            data_end = max(data_end, int(end))
        except (TypeError, KeyError, ValueError):
            raise UserError(f"{file}: corrupt safetensors header (bad entry for {key!r})") from None
    expected = 8 + header_len + data_end
    if size < expected:
        raise UserError(f"{file}: truncated: {size} bytes, the header says {expected} (download or copy again)")
    return metadata, header


def read_weights_info(file: str | os.PathLike) -> dict:
    """The self-description of a dreamarcade weights file or directory, without loading tensors:
    {"file", "format_version", "num_actions", "dtype", "agent_config" (dict), "info" (dict)}."""
    file = weights_file(file)
    metadata, _ = read_header(file)
    if metadata.get("format") != FORMAT_NAME:
        raise UserError(
            f"{file}: not a dreamarcade weights file (its metadata has no format={FORMAT_NAME!r}); "
            "DIAMOND checkpoints are .pt files"
        )
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise UserError(f"{file}: bad format_version {metadata.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise UserError(
            f"{file}: written in weights format version {version}, this dreamarcade reads up to "
            f"{FORMAT_VERSION}; upgrade dreamarcade"
        )
    if version < 1:
        raise UserError(f"{file}: bad format_version {version}")
    try:
        agent_config = json.loads(metadata["agent_config"])
        info = json.loads(metadata.get("info", "{}"))
        num_actions = int(metadata["num_actions"])
    except (KeyError, ValueError) as e:
        raise UserError(f"{file}: corrupt metadata ({type(e).__name__}: {e})") from None
    dtype = metadata.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise UserError(f"{file}: unsupported dtype {dtype!r}")
    return {"file": str(file), "format_version": version, "num_actions": num_actions, "dtype": dtype,
            "agent_config": agent_config, "info": info}


def check_state_dict(expected: dict, found: dict, where: str, name=lambda key: key) -> None:
    """Raise UserError naming `where` and the first offending keys if `found` does not match
    `expected` (key -> tensor) exactly in keys and shapes. `name` maps our key to the file's name."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing:
        raise UserError(f"{where}: missing key{'s' * (len(missing) > 1)} {_list(map(name, missing))}")
    if extra:
        raise UserError(f"{where}: unexpected key{'s' * (len(extra) > 1)} {_list(map(name, extra))}")
    for key, ref in expected.items():
        value = found[key]
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{where}: {name(key)} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(ref.shape):
            raise UserError(
                f"{where}: {name(key)} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
            )
        if ref.is_floating_point() and not value.is_floating_point():
            raise UserError(f"{where}: {name(key)} has dtype {value.dtype}, expected floating point")


def check_finite(state: dict, where: str, name=lambda key: key) -> None:
    for key, value in state.items():
        # the sum is non-finite whenever an element is (exact check only then: it is 5x slower)
        if value.is_floating_point() and not torch.isfinite(value.sum()) and not torch.isfinite(value).all():
            raise UserError(f"{where}: {name(key)} contains NaN or infinite values")


def build_agent(config, state: dict, where: str, name=lambda key: key):
    """A model.Agent for `config` holding exactly `state` (checked: keys, shapes, finite values).

    The agent is built on the meta device and the checked tensors are assigned, which skips the
    random initialisation (seconds for the reference size) that loading would overwrite anyway.
    """
    from model import Agent

    with torch.device("meta"):
        agent = Agent(config)
    expected = agent.state_dict()
    check_state_dict(expected, state, where, name)
    state = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    check_finite(state, where, name)
    agent.load_state_dict(state, strict=True, assign=True)
    if _has_meta_tensors(agent):  # a tensor outside the state dict: build it for real
        agent = Agent(config)
        agent.load_state_dict(state, strict=True)
    return agent


def _has_meta_tensors(module: torch.nn.Module) -> bool:
    tensors = [*module.parameters(), *module.buffers()]
    tensors += [v for m in module.modules() for v in vars(m).values() if isinstance(v, torch.Tensor)]
    return any(t.is_meta for t in tensors)


def load_agent_file(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a dreamarcade weights file or directory into a new model.Agent (float32, eval mode).

    Raises UserError naming the file for a wrong format/version, bad config, action-count mismatch,
    missing/extra/misshaped keys, truncated or corrupt data; FileNotFoundError if it does not exist.
    """
    from model import AgentConfig

    file = weights_file(path)
    meta = read_weights_info(file)
    try:
        config = AgentConfig.from_dict(meta["agent_config"])
    except Exception as e:  # a hand-edited or foreign config: any failure is the file's fault
        raise UserError(f"{file}: invalid agent_config ({type(e).__name__}: {e})") from None
    if config.num_actions != meta["num_actions"]:
        raise UserError(
            f"{file}: num_actions {meta['num_actions']} in the metadata but {config.num_actions} in agent_config"
        )
    try:
        state = load_file(str(file), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError for corrupt data
        raise UserError(f"{file}: corrupt safetensors data ({e})") from None
    return build_agent(config, state, str(file)).to(device).eval()


def _list(keys, limit: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")
