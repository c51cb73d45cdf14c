"""`push_run`: publish a training run's weights to the Hub in dreamarcade's format, with a model card.

The repository gets `agent.safetensors` (config in its header), `config.json` (the run's config, or
the agent config), `README.md` (model card: game, training steps, scores, fidelity, how to play) and
`preview.gif` when the run has one. Read from the run directory (training.run_dir layout):

    weights/agent.safetensors (or agent.safetensors)   required
    config.json, finished, metrics.jsonl               training steps and summary
    eval.json / scores.json, fidelity.json (or fidelity/fidelity.json), preview.gif (or *.gif)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from weights.errors import NotAllowed, NotFound, Offline, UserError
from weights.format import WEIGHTS_FILENAME, load_agent_file, read_weights_info

_SCORE_FILES = ("eval.json", "scores.json", "eval/eval.json")
_FIDELITY_FILES = ("fidelity.json", "fidelity/fidelity.json")
_GIF_FILES = ("preview.gif", "fidelity/preview.gif")


def find_run_weights(run_dir: Path) -> Path:
    for candidate in (run_dir / "weights" / WEIGHTS_FILENAME, run_dir / WEIGHTS_FILENAME):
        if candidate.is_file():
            return candidate
    if run_dir.is_file() and run_dir.suffix == ".safetensors":
        return run_dir
    raise NotFound(f"{run_dir}: no weights/{WEIGHTS_FILENAME} (is this a training run directory?)")


def push_run(run_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None,
             revision: str | None = None, commit_message: str | None = None, scores: str | None = None,
             fidelity: str | None = None, preview: str | None = None) -> str:
    """Upload a run's weights, config, model card and preview GIF to Hub repo `repo_id` (created if
    needed; `private` only applies to a new repository). `token` defaults to huggingface_hub's
    (HF_TOKEN or `hf auth login`). `scores`/`fidelity` (JSON from `dreamarcade eval`) and `preview`
    (a GIF) override the files found in the run directory. Returns the URL of the commit. Play it
    with `dreamarcade play --weights hf://{repo_id}`.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from weights import hub

    run_dir = Path(run_dir).expanduser()
    if not run_dir.exists():
        raise NotFound(f"{run_dir}: no such run directory")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"repo id {repo_id!r}: expected OWNER/NAME")
    weights = find_run_weights(run_dir)
    load_agent_file(weights)  # refuse to publish weights that would not load
    facts = collect_facts(run_dir, weights)
    for key, given in (("scores", scores), ("fidelity", fidelity)):
        if given is not None:
            facts[key] = _read_json(Path(given).expanduser())
            if facts[key] is None:
                raise UserError(f"{given}: not a readable JSON object (expected `dreamarcade eval --json` output)")
    if preview is not None:
        facts["preview"] = Path(preview).expanduser()
        if not facts["preview"].is_file():
            raise NotFound(f"{preview}: no such preview GIF")
    with tempfile.TemporaryDirectory(prefix="dreamarcade-push-") as tmp:
        stage = Path(tmp)
        shutil.copyfile(weights, stage / WEIGHTS_FILENAME)
        config = run_dir / "config.json"
        if config.is_file():
            shutil.copyfile(config, stage / "config.json")
        else:
            (stage / "config.json").write_text(json.dumps({"agent": facts["agent_config"]}, indent=2) + "\n")
        if facts.get("preview"):
            shutil.copyfile(facts["preview"], stage / "preview.gif")
        (stage / "README.md").write_text(model_card(repo_id, facts))
        api = HfApi(endpoint=hub.endpoint(), token=token)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(folder_path=str(stage), repo_id=repo_id, revision=revision,
                                     commit_message=commit_message or f"dreamarcade: {facts.get('game') or 'agent'} weights")
        except HfHubHTTPError as e:
            status = e.response.status_code if getattr(e, "response", None) is not None else "?"
            if status in (401, 403):
                raise NotAllowed(f"hf://{repo_id}: not allowed to write (HTTP {status}); log in with "
                                      "`hf auth login`, set HF_TOKEN or pass --token with write access") from None
            raise Offline(f"hf://{repo_id}: upload failed (HTTP {status}: "
                                  f"{str(e).strip().splitlines()[0]})") from None
    return str(getattr(info, "commit_url", info))


def collect_facts(run_dir: Path, weights: Path) -> dict:
    """What the model card says, from whichever of the run's files exist."""
    meta = read_weights_info(weights)
    info = meta["info"]
    facts: dict = {"agent_config": meta["agent_config"], "num_actions": meta["num_actions"], "info": info,
                   "game": info.get("game")}
    run_config = _read_json(run_dir / "config.json") or {}
    facts["game"] = facts["game"] or run_config.get("game") or (run_config.get("train") or {}).get("game")
    finished = _read_json(run_dir / "finished") or {}
    facts["summary"] = finished
    steps = {k: v for k, v in {**info, **finished}.items()
             if any(w in k for w in ("step", "epoch", "frames")) and isinstance(v, (int, float))}
    last = _last_metrics(run_dir / "metrics.jsonl")
    if "epoch" in last and "epoch" not in steps:
        steps["epochs"] = last["epoch"]
    facts["steps"] = steps
    facts["scores"] = next((d for d in map(_read_json, (run_dir / f for f in _SCORE_FILES)) if d), None)
    facts["fidelity"] = next((d for d in map(_read_json, (run_dir / f for f in _FIDELITY_FILES)) if d), None)
    gifs = [run_dir / f for f in _GIF_FILES if (run_dir / f).is_file()] or sorted(run_dir.glob("*.gif"))
    facts["preview"] = gifs[0] if gifs else None
    return facts


def model_card(repo_id: str, facts: dict) -> str:
    """A Hub model card (README.md with YAML metadata) for the pushed run."""
    game = facts.get("game") or "unknown"
    lines = ["---", "library_name: dreamarcade", "tags:", "- reinforcement-learning", "- world-model",
             "- diffusion", "- atari", "- dreamarcade"]
    if facts.get("game"):
        lines.append(f"- {game}")
    lines += ["---", "", f"# dreamarcade agent: {game}", "",
              "A diffusion world model (EDM denoiser), a reward/termination model and an actor-critic trained "
              "in imagination (the DIAMOND recipe), saved in dreamarcade's weights format.", ""]
    if facts.get("preview"):
        lines += ["![the agent playing inside the world model](preview.gif)", ""]
    lines += ["## Play it", "", "```", f"dreamarcade play --game {game} --weights hf://{repo_id}", "```", "",
              "## Details", "", "| | |", "|---|---|", f"| game | {game} |", f"| actions | {facts['num_actions']} |"]
    for key, value in sorted(facts.get("steps", {}).items()):
        lines.append(f"| {key.replace('_', ' ')} | {_fmt(value)} |")
    for key in ("preset", "preset_model", "source"):
        if key in facts["info"]:
            lines.append(f"| {key} | {_fmt(facts['info'][key])} |")
    lines.append("")
    for title, data in (("Scores", facts.get("scores")), ("Fidelity", facts.get("fidelity"))):
        if data:
            lines += [f"## {title}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in _flatten(data) if isinstance(v, (int, float, str))][:40]
            lines.append("")
    lines += ["Files: `agent.safetensors` (weights, with the agent config in its metadata), `config.json`.", ""]
    return "\n".join(lines)


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _last_metrics(path: Path) -> dict:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}


def _flatten(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            yield f"{prefix}{key}", value


def _fmt(value) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.4g}"
    return str(value).replace("|", "/")
