"""World-model fidelity: image metrics against hand-checked values, identities, a real Breakout rollout."""
from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from app.cli import main
from model.agent import Agent
from model.presets import tiny
from training.fidelity import (
    MAX_PSNR, STRIP_HEADER_H, STRIP_LABEL_W, FidelityConfig, compare, imagine, measure_fidelity, psnr,
    record_real, ssim, strip_image,
)

CONTEXT = tiny(4).denoiser.num_steps_conditioning  # the tiny agent's context length, from its config


def _patterns() -> tuple[torch.Tensor, torch.Tensor]:
    y, x = np.mgrid[0:64, 0:64]
    a = np.stack([(x * 4 + y * 2 + c * 50) % 256 for c in range(3)]).astype(np.uint8)
    b = np.clip(a.astype(int) + ((x * 7 + y * 13) % 31 - 15), 0, 255).astype(np.uint8)
    return torch.from_numpy(a), torch.from_numpy(b)


def test_metrics_match_scikit_image():
    a, b = _patterns()
    # Values from scikit-image 0.25: structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    # use_sample_covariance=False, data_range=255, channel_axis=2) and peak_signal_noise_ratio(a, b, data_range=255).
    assert ssim(a[None], b[None]).item() == pytest.approx(0.7078784484238785, abs=2e-5)
    assert psnr(a, b).item() == pytest.approx(29.241180835308146, abs=1e-4)


def test_metric_identities():
    a, b = _patterns()
    assert ssim(a[None], a[None]).item() == pytest.approx(1.0)
    assert psnr(a, a).item() == MAX_PSNR
    assert ssim(a[None], b[None]).item() == pytest.approx(ssim(b[None], a[None]).item())
    # Constant frames: no variance, SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) on [0, 1] intensities.
    x, y = torch.full((1, 3, 16, 16), 100, dtype=torch.uint8), torch.full((1, 3, 16, 16), 200, dtype=torch.uint8)
    mx, my, c1 = 100 / 255, 200 / 255, 0.01 ** 2
    assert ssim(x, y).item() == pytest.approx((2 * mx * my + c1) / (mx ** 2 + my ** 2 + c1), rel=1e-5)
    assert psnr(x, y).item() == pytest.approx(10 * np.log10(255 ** 2 / 100 ** 2), rel=1e-5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def agent() -> Agent:
    torch.manual_seed(0)
    return Agent(tiny(4)).eval()


@pytest.fixture(scope="module")
def real(agent):
    return record_real(agent, "Breakout", FidelityConfig(horizon=6, contexts=3, max_warmup=10))


def test_real_trajectories(real):
    assert real.obs.shape == (3, CONTEXT + 6, 3, 64, 64) and real.obs.dtype == torch.uint8
    assert real.act.shape == (3, CONTEXT + 6) and int(real.act.max()) < 4
    for valid, end in zip(real.valid, real.end):
        n = int(valid.sum())
        assert n >= 1 and bool(valid[:n].all())  # valid steps come first; an end is the last one
        assert not bool(end[: n - 1].any())
    assert real.obs[:, :CONTEXT].float().std() > 0  # real frames, not zeros


def test_compare_real_with_itself(real):
    """A perfect world model: top PSNR, SSIM 1, every reward and end right."""
    result = compare(real, real)
    assert result["mean_psnr"] == MAX_PSNR and result["mean_ssim"] == pytest.approx(1.0)
    assert result["reward_accuracy"] == 1.0 and result["end_accuracy"] == 1.0
    assert len(result["psnr"]) == 6 and result["valid_per_step"][0] == 3


def test_imagined_rollout(agent, real):
    fake = imagine(agent, real, FidelityConfig(horizon=6, contexts=3, denoising_steps=1))
    assert fake.obs.shape == real.obs.shape
    assert torch.equal(fake.obs[:, :CONTEXT], real.obs[:, :CONTEXT])  # same starting context
    assert set(fake.rew.unique().tolist()) <= {-1.0, 0.0, 1.0}
    result = compare(real, fake)
    assert result["mean_psnr"] < 20  # an untrained denoiser does not reproduce Breakout
    strip = strip_image(real, fake, columns=4)
    top, left = STRIP_HEADER_H + 2, STRIP_LABEL_W + 2
    assert strip.shape == (top + 2 * 128 + 4, left + 5 * 130, 3) and strip.dtype == np.uint8  # context + 4 steps
    # Real above, imagined below: the top-left tile is the last context frame, then steps 1, 3, 4, 6.
    tile = lambda row, col: strip[top + row * 130:top + row * 130 + 128, left + col * 130:left + col * 130 + 128]
    assert np.array_equal(tile(0, 0)[::2, ::2], real.obs[0, CONTEXT - 1].permute(1, 2, 0).numpy())
    assert np.array_equal(tile(1, 4)[::2, ::2], fake.obs[0, CONTEXT - 1 + 6].permute(1, 2, 0).numpy())
    # labels: dark text over every column and beside both rows, nothing else in the margins
    ink = (strip < 128).all(-1)
    for col in range(5):
        assert ink[:top, left + col * 130:left + col * 130 + 128].sum() > 20, col
    for row in range(2):
        assert ink[top + row * 130:top + row * 130 + 128, :left].sum() > 20, row
    assert ink[:top, :left].sum() == 0


def test_measure_and_cli(agent, tmp_path, capsys):
    from weights import save_agent

    result = measure_fidelity(agent, "Breakout", FidelityConfig(horizon=3, contexts=2, max_warmup=5,
                                                                denoising_steps=1), out_dir=tmp_path / "m")
    json.dumps(result)
    assert iio.imread(result["strip"]).shape[0] == STRIP_HEADER_H + 2 + 2 * 128 + 4

    # weights that name their sampler steps are measured with them: the same numbers as asking for them
    path = save_agent(agent, tmp_path / "tiny", metadata={"game": "Breakout", "denoising_steps": 1})
    out = tmp_path / "cli"
    argv = ["eval", "--fidelity", "--weights", str(path), "--game", "Breakout", "--horizon", "3",
            "--contexts", "2", "--policy", "random", "--board-steps", "0", "--serve-clips", "0", "--out", str(out)]
    assert main(argv) == 0
    saved = json.loads((out / "fidelity.json").read_text())
    assert len(saved["psnr"]) == 3 and (out / "strip.png").is_file() and (out / "curves.png").is_file()
    asked = measure_fidelity(agent, "Breakout", FidelityConfig(horizon=3, contexts=2, policy="random",
                                                               denoising_steps=1))
    assert saved["denoising_steps"] == 1 and saved["psnr"] == asked["psnr"]
    assert {"reward_accuracy", "end_accuracy", "mean_ssim"} <= set(saved) and saved["still_levels"] == 0
    assert "PSNR" in capsys.readouterr().out

    # --still-levels overrides the weights' own (none here: 0); the report names what it dreamed with
    assert main([*argv[:-1], str(tmp_path / "still"), "--still-levels", "255"]) == 0
    still = json.loads((tmp_path / "still" / "fidelity.json").read_text())
    assert still["still_levels"] == 255 and still["psnr"] != saved["psnr"]
    # every pixel within 255 levels: the dream is the last context frame over and over, as "copy the last frame"
    assert still["psnr"] == pytest.approx(still["copy_last_psnr"], abs=1e-4)
    assert main([*argv, "--still-levels", "-1"]) == 2 and "--still-levels must be at least 0" in capsys.readouterr().err


def test_wrong_agent_for_game():
    with pytest.raises(ValueError, match="6 actions but Breakout has 4"):
        measure_fidelity(Agent(tiny(6)), "Breakout", FidelityConfig(horizon=2, contexts=1))


def test_fast_path_is_compared_with_float32(agent, real):
    cfg = FidelityConfig(horizon=6, contexts=3, denoising_steps=1)
    exact = imagine(agent, real, cfg)
    again = imagine(agent, real, cfg)
    assert torch.equal(exact.obs, again.obs)  # seeded: the same noise gives the same frames
    result = measure_fidelity(agent, "Breakout", FidelityConfig(horizon=2, contexts=1, max_warmup=0,
                                                                denoising_steps=1, precision="bfloat16"))
    assert len(result["vs_float32"]["psnr"]) == 2 and result["vs_float32"]["mean_psnr"] > 0


def test_short_episodes_use_padded_contexts():
    """Catch lasts 7 steps: contexts reach back before the episode start, padded as training pads them."""
    torch.manual_seed(0)
    catch_agent = Agent(tiny(3)).eval()
    cfg = FidelityConfig(horizon=10, contexts=4, max_warmup=3)
    real = record_real(catch_agent, "catch", cfg)
    assert int(real.pad.max()) > 0 and int(real.valid.sum(1).max()) <= 7
    obs_ctx, act_ctx = real.context()
    for n, pad in enumerate(real.pad.tolist()):
        assert bool((obs_ctx[n, :pad] == 0).all()) and bool((act_ctx[n, :pad] == 0).all())
        assert bool(real.end[n, int(real.valid[n].sum()) - 1])  # every trajectory runs into the game's end
    result = measure_fidelity(catch_agent, "Catch", cfg)
    assert result["game"] == "Catch" and result["end_steps"] == 4
