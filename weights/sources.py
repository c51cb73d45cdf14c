"""`load_agent(source, game)`: every place weights can come from (DESIGN.md "Weights sources").

    None                      the best weights already here: DIAMOND's for the game if they are in the
                              Hugging Face cache (trained far longer), else the ones shipped in
                              weights/shipped/{Game}.safetensors, else "diamond" (downloaded once)
    "diamond[@REVISION]"      DIAMOND's released agent for `game` (Hub repo eloialonso/diamond, pinned)
    "hf://OWNER/REPO[/PATH][@REVISION]"
                              a Hub repository in dreamarcade's format (agent.safetensors at PATH or
                              the root), or a DIAMOND .pt inside one (PATH ending in .pt)
    a local path              a dreamarcade weights directory or .safetensors file, or a DIAMOND .pt

DIAMOND checkpoints from the Hub are converted to dreamarcade's format once and the converted
copy is cached beside huggingface_hub's cache.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from weights.errors import NotFound, UserError

# torch-heavy modules (weights.format, weights.diamond) are imported where used, so that
# `dreamarcade games` and `describe_source` start without torch.
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
DEFAULT_GAME = "Breakout"
HF_PREFIX = "hf://"
_TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


@dataclass(frozen=True)
class HubSource:
    """A parsed `hf://OWNER/REPO[/PATH][@REVISION]`."""

    repo_id: str
    path: str | None = None
    revision: str | None = None

    @property
    def is_diamond_checkpoint(self) -> bool:
        return self.path is not None and self.path.endswith(_TORCH_SUFFIXES)

    @property
    def filename(self) -> str:
        """The file to download: the .pt or .safetensors named, or PATH/agent.safetensors."""
        from weights.format import WEIGHTS_FILENAME

        if self.path is None:
            return WEIGHTS_FILENAME
        if self.is_diamond_checkpoint or self.path.endswith(".safetensors"):
            return self.path
        return f"{self.path.rstrip('/')}/{WEIGHTS_FILENAME}"

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo_id}" + (f"/{self.path}" if self.path else "") + \
            (f"@{self.revision}" if self.revision else "")


def parse_hub_source(source: str) -> HubSource:
    """Parse `hf://OWNER/REPO[/PATH][@REVISION]`; UserError with the expected form otherwise."""
    rest = source[len(HF_PREFIX):] if source.startswith(HF_PREFIX) else source
    revision = None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
        if not revision:
            raise UserError(f"{source!r}: empty revision after '@'")
    parts = [p for p in rest.split("/")]
    if len(parts) < 2 or not parts[0] or not parts[1] or any(p in ("", ".", "..") for p in parts[2:]):
        raise UserError(f"{source!r}: expected hf://OWNER/REPO[/PATH][@REVISION]")
    return HubSource(repo_id=f"{parts[0]}/{parts[1]}", path="/".join(parts[2:]) or None, revision=revision)


def shipped_weights(game: str) -> Path | None:
    """The weights file shipped with dreamarcade for `game`, if any."""
    file = SHIPPED_DIR / f"{game}.safetensors"
    return file if file.is_file() else None


def diamond_cached(game: str) -> bool:
    """Whether DIAMOND's released agent for `game` (pinned revision) is in the Hugging Face cache (no network)."""
    from weights import hub

    return hub.cached_file(hub.DIAMOND_REPO, hub.diamond_filename(game), hub.DIAMOND_REVISION) is not None


def default_source(game: str) -> str:
    """What `load_agent(None, game)` loads: "diamond" (cached), "shipped", or "diamond" (to download)."""
    return "shipped" if shipped_weights(game) is not None and not diamond_cached(game) else "diamond"


def describe_source(source: str | None, game: str | None) -> str:
    """One line saying where `load_agent(source, game)` takes its weights from, and for the shipped weights how
    to get better ones (no network)."""
    game = game or DEFAULT_GAME
    if source is None:
        if default_source(game) == "shipped":
            return (f"shipped weights {shipped_weights(game)} (a small model trained briefly; for DIAMOND's, "
                    f"trained far longer: `dreamarcade download {game}`, used by default from then on)")
        cached = " from the Hugging Face cache" if diamond_cached(game) else ""
        return f"DIAMOND's released {game} agent{cached} ({_diamond_url(game)})"
    if source == "diamond":
        return f"DIAMOND's released {game} agent ({_diamond_url(game)})"
    return str(source)


def load_agent(source: str | os.PathLike | None = None, game: str | None = None, device="cpu"):
    """A model.Agent in eval mode on `device`, from `source` (see the module docstring).

    `game` (canonical name, e.g. "Breakout") selects the shipped or DIAMOND weights (default Breakout);
    for other sources it is only recorded when the weights do not name their game.
    Raises NotFound (no such file/repository), UserError (invalid or corrupt weights, naming the file),
    Offline (not cached and no network: the message says how to get it); see `weights.errors`.
    `agent.weights_info` (declared on model.Agent) says where the weights came from: "source" (as given, or
    what `None` chose), "file" (the file read), and where known "game", "hub" (the Hub URL), "format",
    "stored_dtype" and the metadata the weights were saved with.
    """
    if source is None:
        game = game or DEFAULT_GAME
        if default_source(game) == "shipped":
            agent, info = _load_file(shipped_weights(game), device)
        else:
            agent, info = _load_diamond_release(game, device)
    elif isinstance(source, str) and (source == "diamond" or source.startswith("diamond@")):
        game = game or DEFAULT_GAME
        agent, info = _load_diamond_release(game, device, source.partition("@")[2] or None)
    elif isinstance(source, str) and source.startswith(HF_PREFIX):
        agent, info = _load_hub(parse_hub_source(source), game, device)
    else:
        agent, info = _load_local(source, device)
    if game is not None:  # otherwise only the weights' own metadata names a game
        info.setdefault("game", game)
    info["source"] = str(source) if source is not None else describe_source(None, game)
    agent.weights_info = info
    return agent


def _load_file(file: Path, device) -> tuple:
    """A dreamarcade weights file -> (agent, info: its metadata, the file, the format, the stored dtype)."""
    from weights.format import FORMAT_NAME, load_agent_file, read_weights_info

    agent = load_agent_file(file, device)
    meta = read_weights_info(file)
    return agent, {**meta["info"], "file": meta["file"], "format": FORMAT_NAME, "stored_dtype": meta["dtype"]}


def _load_local(path: str | os.PathLike, device) -> tuple:
    """A dreamarcade weights directory/file or a DIAMOND .pt checkpoint on disk -> (agent, info)."""
    from weights.diamond import load_diamond_agent

    path = Path(path).expanduser()
    if not path.exists():
        raise NotFound(
            f"weights {str(path)!r} not found: give a weights directory, a .safetensors or DIAMOND .pt file, "
            "'diamond', or hf://OWNER/REPO"
        )
    if path.is_file() and (path.suffix in _TORCH_SUFFIXES or _is_zip(path)):
        return load_diamond_agent(path, device), {"source": "diamond", "file": str(path)}
    return _load_file(path, device)


def fetch_diamond(game: str, revision: str | None = None, force: bool = False) -> Path:
    """Download DIAMOND's released checkpoint for `game` (pinned revision unless given) into the
    cache and convert it to dreamarcade's format once; returns the converted file."""
    from weights import hub

    revision = revision or hub.DIAMOND_REVISION
    filename = hub.diamond_filename(game)
    file = hub.download(hub.DIAMOND_REPO, filename, revision, force=force)
    converted = hub.converted_path(file)
    if force or not _readable(converted):
        _convert(hub.hub_url(hub.DIAMOND_REPO, filename, revision), file, converted, game)
    return converted


def _load_diamond_release(game: str, device, revision: str | None = None) -> tuple:
    from weights.hub import DIAMOND_REPO, DIAMOND_REVISION, diamond_filename

    hint = f"run `dreamarcade download {game}` with network access first"
    return _load_hub_diamond(DIAMOND_REPO, diamond_filename(game), revision or DIAMOND_REVISION, game, device, hint)


def _load_hub(source: HubSource, game: str, device) -> tuple:
    from weights import hub

    hint = "connect to the network and run again (the download is then cached), or use a local path"
    if source.is_diamond_checkpoint:
        if game is None and re.fullmatch(r"(.*/)?atari_100k/models/\w+\.pt", source.filename):
            game = Path(source.filename).stem  # DIAMOND's layout names the file after the game
        return _load_hub_diamond(source.repo_id, source.filename, source.revision, game, device, hint)
    try:
        file = hub.download(source.repo_id, source.filename, source.revision, hint=hint)
    except FileNotFoundError as e:
        if source.path is not None or "has no file" not in str(e):
            raise
        raise NotFound(f"{e}: not a dreamarcade weights repository; for a DIAMOND checkpoint inside "
                       f"it, name the file: hf://{source.repo_id}/PATH/GAME.pt") from None
    try:
        agent, info = _load_file(file, device)
    except UserError as e:
        raise UserError(f"{source} (cached at {file}) is not valid dreamarcade weights: {_reason(e, file)}") from None
    return agent, {**info, "hub": str(source)}


def _load_hub_diamond(repo_id: str, filename: str, revision: str | None, game: str | None, device,
                      hint: str) -> tuple:
    """Download a DIAMOND .pt from the Hub (cached), convert it once, load the converted copy -> (agent, info)."""
    from weights import hub

    url = hub.hub_url(repo_id, filename, revision)
    file = hub.download(repo_id, filename, revision, hint=hint)
    converted = hub.converted_path(file)
    if converted.is_file():
        try:
            agent, info = _load_file(converted, device)
            return agent, {**info, "hub": url}
        except UserError as e:  # a damaged converted copy is rebuilt from the checkpoint
            hub.log(f"re-converting {url}: the cached conversion is unusable ({e})")
    agent = _convert(url, file, converted, game)
    return agent.to(device).eval(), {"source": "diamond", "hub": url, "file": str(file), **({"game": game} if game else {})}


def _convert(url: str, file: Path, converted: Path, game: str | None):
    """Reads and checks the DIAMOND checkpoint `file` (downloaded from `url`) and writes it in dreamarcade's
    format to `converted` (where the cache is writable) -> the agent read, on the CPU."""
    from weights import hub
    from weights.diamond import load_diamond_agent
    from weights.format import save_agent

    try:
        agent = load_diamond_agent(file, "cpu")
    except UserError as e:
        raise UserError(f"{url} (cached at {file}) is not a valid DIAMOND agent checkpoint: {_reason(e, file)}; "
                        f"if the download was damaged, delete {os.path.realpath(file)} and download again") from None
    try:
        save_agent(agent, converted, metadata={"source": "diamond", "origin": url, **({"game": game} if game else {})})
    except OSError as e:  # a read-only cache still plays, it just converts again next time
        hub.log(f"could not cache the converted weights at {converted} ({e})")
    return agent


def _diamond_url(game: str) -> str:
    from weights.hub import DIAMOND_REPO, DIAMOND_REVISION, diamond_filename, hub_url

    return hub_url(DIAMOND_REPO, diamond_filename(game), DIAMOND_REVISION)


def _reason(error: Exception, file: Path) -> str:
    text = str(error)
    prefix = f"{file}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _readable(file: Path) -> bool:
    """Whether a dreamarcade weights file exists with a complete header (no tensors read)."""
    from weights.format import read_weights_info

    try:
        read_weights_info(file)
        return True
    except (OSError, ValueError):
        return False


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"
