"""`DenoiserConfig.moving_loss_weight`: the pixels near what moved between the last two conditioning frames weigh
1 + w in the denoiser's loss (a 2-pixel ball is otherwise lost among 4,096 static pixels). The weight reads the
conditioning only, so the best prediction is still the conditional mean. Off by default."""
import dataclasses

import pytest
import torch

from model import Agent
from model.agent import AgentConfig
from model.batch import Batch
from model.denoiser import moving_pixels, pixel_weights
from model.presets import small_residual, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def ball_batch(moves: bool, b=4, last_target_only=False) -> Batch:
    """Six black frames with a grey 2x2 ball that steps 3 pixels right each frame (or stays put). With
    last_target_only the ball moves only into the last frame (the targets move; the conditioning does not)."""
    obs = torch.full((b, 6, 3, 64, 64), -1.0)
    for t in range(6):
        x = 10 + 3 * t if moves else 10
        if last_target_only:
            x = 10 if t < 5 else 13
        obs[:, t, :, 30:32, x:x + 2] = 0.5
    return Batch(obs=obs, act=torch.zeros(b, 6, dtype=torch.long), rew=torch.zeros(b, 6),
                 end=torch.zeros(b, 6, dtype=torch.uint8), trunc=torch.zeros(b, 6, dtype=torch.uint8),
                 mask=torch.ones(b, 6, dtype=torch.bool))


def agent_with(weight: float, radius: int = 4, target_weight: float = 0.0, appear: float = 0.0,
               false_appear: float = 0.0) -> Agent:
    cfg = tiny(4)
    torch.manual_seed(0)
    den = dataclasses.replace(cfg.denoiser, moving_loss_weight=weight, moving_radius=radius,
                              moved_target_weight=target_weight, appear_weight=appear, false_appear_weight=false_appear)
    return Agent(dataclasses.replace(cfg, denoiser=den))


def loss(agent: Agent, batch: Batch) -> float:
    return agent.denoiser.loss(batch, generator=torch.Generator().manual_seed(1)).item()


def test_moving_pixels_are_where_the_ball_left_and_arrived_widened_by_the_radius():
    batch = ball_batch(moves=True)
    m = moving_pixels(batch.obs[:, 3], batch.obs[:, 4])
    assert m.shape == (4, 1, 64, 64)
    assert m.sum() == 4 * 8  # 2x2 left at x 19-20, 2x2 arrived at x 22-23
    assert m[0, 0, 30:32, 19:21].all() and m[0, 0, 30:32, 22:24].all()
    wide = moving_pixels(batch.obs[:, 3], batch.obs[:, 4], radius=2)
    assert wide[0, 0, 28:34, 17:26].all() and wide.sum() == 4 * 6 * 9  # rows 30-31 +-2, columns 19-23 +-2
    assert not moving_pixels(batch.obs[:, 3], batch.obs[:, 3], radius=2).any()
    small_change = batch.obs[:, 3] + 0.05  # a colour wobble under the threshold is not motion
    assert not moving_pixels(batch.obs[:, 3], small_change).any()


def test_the_weight_adds_to_the_loss_only_where_the_conditioning_moved():
    plain, weighted, double = agent_with(0.0), agent_with(10.0), agent_with(20.0)
    still, moving = ball_batch(moves=False), ball_batch(moves=True)
    assert loss(weighted, still) == loss(plain, still)  # nothing moved: the reference's loss, exactly
    # the target moves but the conditioning frames do not: the weight never reads the target
    surprise = ball_batch(moves=False, last_target_only=True)
    assert loss(weighted, surprise) == loss(plain, surprise)
    base, once, twice = loss(plain, moving), loss(weighted, moving), loss(double, moving)
    assert once > base * 1.01
    assert twice - once == pytest.approx(once - base, rel=1e-4)  # 1 + w on the moving pixels: linear in w


def test_the_target_weight_reads_where_the_target_moved_near_what_moves():
    """`moved_target_weight` weighs where the target differs from the last real frame, near what moved in the
    conditioning: a ball arriving from nowhere, or a change far from the ball (a score), is not tilted."""
    plain, tilted = agent_with(0.0), agent_with(0.0, target_weight=10.0)
    extra = lambda a, batch: loss(a, batch) - loss(plain, batch)
    surprise, still, moving = ball_batch(moves=False, last_target_only=True), ball_batch(moves=False), ball_batch(moves=True)
    assert extra(tilted, still) == 0 and extra(tilted, surprise) == 0
    assert extra(tilted, moving) > loss(plain, moving) * 0.001
    far = ball_batch(moves=True)
    far.obs[:, 5, :, 2:6, 40:48] = 0.5  # a score digit changes in the last target, far from the ball
    assert extra(tilted, far) == pytest.approx(extra(tilted, moving), rel=1e-4)
    both = agent_with(10.0, target_weight=10.0)  # the two add up
    assert extra(both, moving) == pytest.approx(extra(agent_with(10.0), moving) + extra(tilted, moving), rel=1e-4)


def test_the_appear_weight_reads_where_the_target_moved_away_from_what_moves():
    """`appear_weight` a: a ball appearing where nothing moved (a serve) weighs 1 + a; near the moving ball it adds
    nothing (that is `moved_target_weight`'s), and with nothing new in the target the loss is the reference's."""
    plain, appear = agent_with(0.0), agent_with(0.0, appear=10.0)
    extra = lambda a, batch: loss(a, batch) - loss(plain, batch)
    surprise, still, moving = ball_batch(moves=False, last_target_only=True), ball_batch(moves=False), ball_batch(moves=True)
    assert extra(appear, still) == 0 and extra(appear, moving) == 0  # nothing appears away from motion
    assert extra(appear, surprise) > loss(plain, surprise) * 0.001
    twice = agent_with(0.0, appear=20.0)
    assert extra(twice, surprise) == pytest.approx(2 * extra(appear, surprise), rel=1e-4)  # 1 + a: linear in a
    far = ball_batch(moves=True)
    far.obs[:, 5, :, 2:6, 40:48] = 0.5  # a score digit changes in the last target, far from the ball
    assert extra(appear, far) > 0 and extra(agent_with(0.0, target_weight=10.0, appear=10.0), far) > extra(appear, far)


def test_the_false_appear_weight_reads_where_the_estimate_drew_what_the_target_lacks():
    """`false_appear_weight` f: where the network's own estimate draws something away from what moves and the
    target has nothing there (a second ball served while one flies), the weight is 1 + f; where the target has it
    too that is `appear_weight`'s, and near the moving ball it adds nothing."""
    cfg = dataclasses.replace(tiny(4).denoiser, appear_weight=5.0, false_appear_weight=10.0)
    frames = ball_batch(moves=True).obs  # the ball flies through rows 30-31
    before, last, target = frames[:, 2], frames[:, 3], frames[:, 4].clone()
    estimate = target.clone()
    estimate[:, :, 50:52, 40:42] = 0.5  # a ball drawn where none comes
    estimate[:, :, 33:35, 20:22] = 0.5  # and one beside the flying ball (within 4 pixels of it)
    target[:, :, 10:12, 50:52] = 0.5  # a ball that comes, drawn by the estimate too
    estimate[:, :, 10:12, 50:52] = 0.5
    extra = pixel_weights(cfg, before, last, target, estimate)
    assert extra.shape == (4, 1, 64, 64)
    assert (extra[:, :, 50:52, 40:42] == 10.0).all() and (extra == 10.0).sum() == 4 * 4  # there only
    assert (extra[:, :, 10:12, 50:52] == 5.0).all()  # it came: the appear weight, not both
    assert (extra[:, :, 33:35, 20:22] == 0.0).all()  # near what moves: neither
    assert pixel_weights(dataclasses.replace(cfg, false_appear_weight=0.0), before, last, target, estimate)[
        :, :, 50:52, 40:42].eq(0).all()
    assert pixel_weights(tiny(4).denoiser, before, last, target, estimate) is None  # the reference's loss


def test_with_an_empty_radius_only_what_appears_out_of_nothing_weighs_more():
    """`appear_empty_radius` r: the appear weights count only where the last frame is one colour for r pixels around.
    A paddle at rest that starts to move (its new pixels touch its old ones) and a digit that turns beside other
    digits are not new; a ball out in the open is, and so is a second ball drawn there where none comes."""
    cfg = dataclasses.replace(tiny(4).denoiser, appear_weight=5.0, false_appear_weight=10.0, appear_empty_radius=3)
    last = torch.full((2, 3, 64, 64), -1.0)
    last[:, 0, 58, 54:62] = 0.6  # the paddle at rest against the right wall
    last[:, :, 1:5, 40:42] = 0.2  # a score digit
    target, estimate = last.clone(), last.clone()
    target[:, 0, 58, 51:54], target[:, 0, 58, 59:62] = 0.6, -1.0  # the paddle leaves 3 pixels left
    target[:, :, 1:5, 43:45] = 0.2  # the digit turns (new strokes 1 pixel from the old)
    target[:, :, 38:40, 30:32] = 0.6  # a serve, in the open
    estimate[:, :, 45:47, 10:12] = 0.6  # a ball drawn in the open where none comes
    estimate[:, 0, 57, 55:58] = 0.6  # and a row of paddle drawn beside the paddle at rest, where none comes
    extra = pixel_weights(cfg, last, last, target, estimate)
    assert (extra[:, :, 38:40, 30:32] == 5.0).all() and (extra[:, :, 45:47, 10:12] == 10.0).all()
    assert (extra[:, :, 57:59] == 0).all() and (extra[:, :, 1:5] == 0).all()
    anywhere = pixel_weights(dataclasses.replace(cfg, appear_empty_radius=0), last, last, target, estimate)
    assert (anywhere[:, :, 58, 51:54] == 5.0).all() and (anywhere[:, :, 1:5, 43:45] == 5.0).all()  # without r
    assert (anywhere[:, :, 57, 55:58] == 10.0).all()


def test_the_rest_weight_weighs_a_resting_object_s_change_either_way():
    """`rest_weight` k: beside an object at rest (the last frame not flat within r, nothing moved in the conditioning),
    the pixels where the target changed and those where the estimate drew a change weigh 1 + k alike (no tilt); in
    the open the appear weights stay as they were, and near what moves neither counts."""
    cfg = dataclasses.replace(tiny(4).denoiser, appear_weight=5.0, false_appear_weight=10.0, appear_empty_radius=3,
                              rest_weight=7.0)
    last = torch.full((2, 3, 64, 64), -1.0)
    last[:, 0, 58, 54:62] = 0.6  # the paddle at rest against the right wall
    last[:, :, 1:5, 40:42] = 0.2  # a score digit
    target, estimate = last.clone(), last.clone()
    target[:, 0, 58, 51:54] = 0.6  # the paddle leaves 3 pixels left (in the target)
    estimate[:, 0, 58, 51:53] = 0.6  # and the estimate drew part of that too
    estimate[:, 0, 57, 55:58] = 0.6  # a row of paddle drawn beside it, where none comes
    target[:, :, 1:5, 43:45] = 0.2  # the digit turns
    target[:, :, 38:40, 30:32] = 0.6  # a serve, in the open
    estimate[:, :, 45:47, 10:12] = 0.6  # a ball drawn in the open where none comes
    extra = pixel_weights(cfg, last, last, target, estimate)
    assert (extra[:, :, 58, 51:54] == 7.0).all() and (extra[:, :, 57, 55:58] == 7.0).all()  # either way, once
    assert (extra[:, :, 1:5, 43:45] == 7.0).all()
    assert (extra[:, :, 38:40, 30:32] == 5.0).all() and (extra[:, :, 45:47, 10:12] == 10.0).all()  # as without k
    assert int((extra == 7.0).sum()) == 2 * (3 + 3 + 8)  # nowhere else
    moving = last.clone()
    moving[:, 0, 58, 54:62], moving[:, 0, 58, 57:65 - 1] = -1.0, 0.6  # the paddle moved into the last frame
    assert pixel_weights(cfg, moving, last, target, estimate)[:, :, 58, 51:54].eq(0).all()  # near motion: not rest
    with pytest.raises(ValueError, match="rest_weight needs appear_empty_radius"):
        dataclasses.replace(cfg, appear_empty_radius=0)


def test_the_false_appear_weight_reaches_the_loss():
    """An untrained network draws noise away from the ball: those pixels weigh 1 + f, linear in f."""
    plain, once, twice = agent_with(0.0), agent_with(0.0, false_appear=10.0), agent_with(0.0, false_appear=20.0)
    batch = ball_batch(moves=True)
    base = loss(plain, batch)
    assert loss(once, batch) > base * 1.001
    assert loss(twice, batch) - base == pytest.approx(2 * (loss(once, batch) - base), rel=1e-4)


def test_the_gradient_reaches_the_network_and_the_default_is_the_references():
    weighted = agent_with(10.0)
    weighted.denoiser.loss(ball_batch(moves=True), generator=torch.Generator().manual_seed(1)).backward()
    assert weighted.denoiser.inner_model.conv_out.weight.grad.abs().sum() > 0
    assert tiny(4).denoiser.moving_loss_weight == 0.0  # DIAMOND's and every other preset's loss is unchanged
    cfg = small_residual(4)
    assert AgentConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    for key in ("moving_loss_weight", "moving_radius", "moved_target_weight", "appear_weight", "false_appear_weight",
                "appear_empty_radius", "rest_weight"):
        del old["denoiser"][key]  # a config written before the options: read as off
    den = AgentConfig.from_dict(old).denoiser
    assert den.moving_loss_weight == den.moved_target_weight == den.appear_weight == den.false_appear_weight == 0.0
    assert den.appear_empty_radius == 0 and den.rest_weight == 0.0
