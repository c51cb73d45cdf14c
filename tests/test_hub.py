"""The Hub, as a user meets it: the real huggingface_hub client against a local Hub server.

Each client runs in a subprocess whose environment is set as a user would set it (HF_ENDPOINT,
HF_HOME, HF_TOKEN, HF_HUB_OFFLINE) before huggingface_hub is imported.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diamond_checkpoint import save_diamond_checkpoint
from hub_server import HubServer
from model import Agent, presets
from weights import parse_hub_source, save_agent
from weights.hub import DIAMOND_REPO, DIAMOND_REVISION, diamond_filename

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_test_write_token"

# Loads each [source, game, extra environment] of argv[1] in turn; prints one JSON line per load:
# the agent's actions, weights_info, a hash of its tensors and the seconds load_agent took, or the
# error's type (weights.errors: what the user can fix) and message. torch is imported first so that the
# seconds measure the loading.
CLIENT = """
import hashlib, json, os, sys, time
import torch, weights.format, weights.diamond
from weights import load_agent
for source, game, extra in json.loads(sys.argv[1]):
    os.environ.update(extra)
    t = time.perf_counter()
    try:
        agent = load_agent(source, game=game)
    except Exception as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e), "seconds": time.perf_counter() - t}))
        continue
    h = hashlib.sha256()
    for key, value in sorted(agent.state_dict().items()):
        h.update(key.encode()); h.update(value.contiguous().numpy().tobytes())
    print(json.dumps({"num_actions": agent.num_actions, "info": agent.weights_info, "hash": h.hexdigest(),
                      "seconds": time.perf_counter() - t}))
"""


def state_hash(state: dict) -> str:
    h = hashlib.sha256()
    for key, value in sorted(state.items()):
        h.update(key.encode())
        h.update(value.contiguous().numpy().tobytes())
    return h.hexdigest()


def user_env(hf_home: Path, endpoint: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def load(env: dict, *steps) -> list[dict]:
    """Run CLIENT in a subprocess with `env`; steps are (source, game[, extra env])."""
    steps = [(step[0], step[1], step[2] if len(step) > 2 else {}) for step in steps]
    result = subprocess.run([sys.executable, "-c", CLIENT, json.dumps(steps)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()[-len(steps):]
    return [json.loads(line) for line in lines]


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def diamond_files(tmp_path_factory):
    """DIAMOND's repository layout: a valid Breakout agent, a Pong agent whose file is corrupt."""
    folder = tmp_path_factory.mktemp("diamond")
    breakout = save_diamond_checkpoint(folder / "Breakout.pt", num_actions=4, seed=3)
    renamed = {k.replace("rew_end_model.", "rew_end."): v for k, v in torch.load(breakout).items()}
    return {
        diamond_filename("Breakout"): breakout.read_bytes(),
        diamond_filename("Pong"): breakout.read_bytes()[:3_000_000],  # cut short on the server
        "atari_100k/config/agent/default.yaml": b"denoiser: {}\n",
        "README.md": b"# DIAMOND\n",
    }, state_hash(renamed)


@pytest.fixture
def server(diamond_files):
    hub = HubServer(token=TOKEN).start()
    hub.commit(DIAMOND_REPO, diamond_files[0], sha=DIAMOND_REVISION)
    yield hub
    hub.stop()


def test_diamond_download_then_offline_from_cache(server, diamond_files, tmp_path):
    env = user_env(tmp_path / "hf", server.url)
    done = cli(env, "download", "breakout")
    assert done.returncode == 0, done.stderr
    assert "Breakout: ready" in done.stdout
    pinned = f"/{DIAMOND_REPO}/resolve/{DIAMOND_REVISION}/{diamond_filename('Breakout')}"
    assert ("GET", pinned) in server.requests

    blob = hashlib.sha256(diamond_files[0][diamond_filename("Breakout")]).hexdigest()
    converted = tmp_path / "hf" / "hub" / "dreamarcade-converted" / f"{blob}.safetensors"
    assert converted.is_file()  # converted once, by `download`
    converted.write_bytes(converted.read_bytes()[:1000])  # damaged: rebuilt from the checkpoint

    server.stop()  # no network from here on
    requests = len(server.requests)
    cached, offline, default = load(env, ("diamond", "Breakout"), ("diamond", "Breakout", {"HF_HUB_OFFLINE": "1"}),
                                    (None, "Breakout", {"HF_HUB_OFFLINE": "1"}))
    for out in (cached, offline, default):  # with DIAMOND's in the cache, no --weights means DIAMOND's
        assert out["num_actions"] == 4 and out["hash"] == diamond_files[1]
    assert offline["info"]["file"] == str(converted)
    assert "from the Hugging Face cache" in default["info"]["source"]
    assert len(server.requests) == requests
    played = cli(dict(env, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"), "play", "--headless", "--steps", "2")
    assert played.returncode == 0, played.stderr
    assert "weights: DIAMOND's released Breakout agent from the Hugging Face cache" in played.stdout
    games = cli(env, "games")
    assert games.returncode == 0 and any(
        line.split()[:2] == ["Breakout", "4"] and "diamond (cached)" in line for line in games.stdout.splitlines())


def test_no_network_and_no_cache_fails_fast_and_says_what_to_do(server, tmp_path):
    server.stop()
    env = user_env(tmp_path / "empty", server.url)
    refused, offline = load(env, ("diamond", "Breakout"), ("diamond", "Breakout", {"HF_HUB_OFFLINE": "1"}))
    for out, why in ((refused, "Connection refused"), (offline, "HF_HUB_OFFLINE")):
        assert out["error"] == "Offline" and out["seconds"] < 5
        assert f"{DIAMOND_REPO}/{diamond_filename('Breakout')}" in out["message"]
        assert "not in the Hugging Face cache" in out["message"] and why in out["message"]
        assert "dreamarcade download Breakout" in out["message"]
    done = cli(env, "play", "--weights", "diamond", "--headless", "--steps", "1")
    assert done.returncode != 0 and "dreamarcade download Breakout" in done.stderr
    assert "Traceback" not in done.stderr


def test_diamond_sources_on_the_server(server, diamond_files, tmp_path):
    inside = f"hf://{DIAMOND_REPO}/{diamond_filename('Breakout')}@{DIAMOND_REVISION}"
    corrupt, missing, any_repo = load(user_env(tmp_path / "hf", server.url),
                                      ("diamond", "Pong"), ("diamond", "Asterix"), (inside, None))
    assert corrupt["error"] == "UserError"  # the file on the server is cut short
    assert f"hf://{DIAMOND_REPO}/{diamond_filename('Pong')}" in corrupt["message"]
    assert "truncated or corrupt" in corrupt["message"] and "download again" in corrupt["message"]
    assert missing["error"] == "NotFound"
    assert "has no file 'atari_100k/models/Asterix.pt'" in missing["message"]
    assert any_repo["num_actions"] == 4 and any_repo["hash"] == diamond_files[1]
    assert any_repo["info"]["game"] == "Breakout"  # from DIAMOND's file layout


@pytest.fixture
def run_dir(tmp_path):
    """A finished training run as training.run_dir lays it out, with a tiny agent."""
    torch.manual_seed(0)
    agent = Agent(presets.tiny(4))
    run = tmp_path / "run"
    save_agent(agent, run / "weights", metadata={"game": "Breakout", "epochs": 2, "preset": "tiny"})
    (run / "config.json").write_text(json.dumps({"game": "Breakout", "preset": "tiny"}))
    (run / "eval.json").write_text(json.dumps({"game": "Breakout", "mean": 12.5, "episodes": 10}))
    (run / "fidelity.json").write_text(json.dumps({"psnr_db": {"step_1": 31.2}}))
    (run / "preview.gif").write_bytes(b"GIF89a" + b"\0" * 32)
    return run, state_hash(agent.state_dict())


def test_push_a_run_then_play_it_from_the_hub(server, run_dir, tmp_path):
    run, expected = run_dir
    env = user_env(tmp_path / "hf", server.url)
    done = cli(env, "push", str(run), "--repo-id", "alice/breakout-tiny", "--token", TOKEN)
    assert done.returncode == 0, done.stderr
    files = server.files("alice/breakout-tiny")
    assert set(files) == {"agent.safetensors", "config.json", "README.md", "preview.gif"}
    card = files["README.md"].decode()
    assert "library_name: dreamarcade" in card and "Breakout" in card and "12.5" in card and "31.2" in card
    assert "preview.gif" in card and "--weights hf://alice/breakout-tiny" in card

    commit = server.repos["alice/breakout-tiny"]["branches"]["main"]
    latest, pinned = load(env, ("hf://alice/breakout-tiny", None), (f"hf://alice/breakout-tiny@{commit}", None))
    assert latest["num_actions"] == 4 and latest["hash"] == expected and latest["info"]["game"] == "Breakout"
    assert pinned["hash"] == expected
    played = cli(env, "play", "--weights", "hf://alice/breakout-tiny", "--headless", "--steps", "2")
    assert played.returncode == 0, played.stderr[-2000:]
    server.stop()  # offline, the cached copy of the branch's latest commit is used
    (offline,) = load(env, ("hf://alice/breakout-tiny", None))
    assert offline["hash"] == expected


def test_private_repository_needs_the_token(server, run_dir, tmp_path):
    run, expected = run_dir
    env = user_env(tmp_path / "hf", server.url)
    assert cli(env, "push", str(run), "--repo-id", "alice/secret", "--private", "--token", TOKEN).returncode == 0
    assert server.repos["alice/secret"]["private"]
    denied, allowed = load(env, ("hf://alice/secret", None), ("hf://alice/secret", None, {"HF_TOKEN": TOKEN}))
    assert denied["error"] == "NotFound" and "private" in denied["message"]
    assert allowed["hash"] == expected
    refused = cli(env, "push", str(run), "--repo-id", "alice/other")  # no token at all
    assert refused.returncode == 2 and "not allowed to write" in refused.stderr


def test_corrupt_weights_in_a_dreamarcade_repository(server, run_dir, tmp_path):
    good = (run_dir[0] / "weights" / "agent.safetensors").read_bytes()
    server.commit("bob/broken", {"agent.safetensors": good[: len(good) // 2]})
    broken, nothing = load(user_env(tmp_path / "hf", server.url), ("hf://bob/broken", None),
                           ("hf://bob/nothing-here", None))
    assert broken["error"] == "UserError" and "hf://bob/broken" in broken["message"]
    assert "truncated" in broken["message"]
    assert nothing["error"] == "NotFound" and "no repository bob/nothing-here" in nothing["message"]


def test_model_card_says_what_the_run_has(run_dir):
    from weights.push import collect_facts, find_run_weights, model_card

    run, _ = run_dir
    facts = collect_facts(run, find_run_weights(run))
    card = model_card("alice/breakout-tiny", facts)
    assert card.startswith("---\nlibrary_name: dreamarcade\n")
    for text in ("# dreamarcade agent: Breakout", "| actions | 4 |", "| epochs | 2 |", "| preset | tiny |",
                 "| mean | 12.5 |", "| psnr_db.step_1 | 31.2 |", "](preview.gif)",
                 "dreamarcade play --game Breakout --weights hf://alice/breakout-tiny"):
        assert text in card, text
    for name in ("eval.json", "fidelity.json", "preview.gif"):
        (run / name).unlink()
    bare = model_card("alice/x", collect_facts(run, find_run_weights(run)))
    assert "## Scores" not in bare and "preview.gif" not in bare and "| game | Breakout |" in bare


@pytest.mark.parametrize("text, repo, path, revision", [
    ("hf://alice/run", "alice/run", None, None),
    ("hf://alice/run@v1", "alice/run", None, "v1"),
    ("hf://eloialonso/diamond/atari_100k/models/Pong.pt@abc", "eloialonso/diamond", "atari_100k/models/Pong.pt", "abc"),
    ("hf://alice/runs/breakout", "alice/runs", "breakout", None),
])
def test_hub_sources_parse(text, repo, path, revision):
    parsed = parse_hub_source(text)
    assert (parsed.repo_id, parsed.path, parsed.revision) == (repo, path, revision)
    assert str(parsed) == text


@pytest.mark.parametrize("text", ["hf://alice", "hf://alice/", "hf:///run", "hf://alice/run@", "hf://a/b/../c"])
def test_bad_hub_sources_say_the_expected_form(text):
    with pytest.raises(ValueError, match="hf://OWNER/REPO|empty revision"):
        parse_hub_source(text)
