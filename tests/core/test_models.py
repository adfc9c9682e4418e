"""Shape, gradient and strategy tests of the model family on random tensors (small widths for speed)."""

from __future__ import annotations

import pytest
import torch
from mmcanet.complexity import count_macs, count_params
from mmcanet.models import ARCHITECTURES, STRATEGIES, build_model, model_config

SMALL = {"mmcanet": {"widths": [8, 16, 16, 16], "heads": 2, "window": 4},
         "mmcanet_optical": {"widths": [8, 16, 16, 16], "heads": 2, "window": 4},
         "dsen2cr": {"width": 16, "depth": 2}}


def _inputs(b: int = 1, h: int = 37, w: int = 53, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 13, h, w, generator=g), torch.rand(b, 2, h, w, generator=g)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_any_size_shapes_and_finite(arch: str, strategy: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, strategy, **SMALL[arch]).eval()
    for h, w in [(37, 53), (8, 8), (1, 5)]:
        s2, s1 = _inputs(2, h, w)
        with torch.no_grad():
            out = model(s2, s1)
            stages = model.forward_stages(s2, s1, torch.ones(2, 1, h, w))
        assert out.shape == (2, 13, h, w)
        assert torch.isfinite(out).all()
        assert all(s.shape == (2, 13, h, w) for s in stages)


def test_gradients_reach_both_encoders() -> None:
    torch.manual_seed(0)
    model = build_model("mmcanet", "single", **SMALL["mmcanet"])
    s2, s1 = _inputs(1, 32, 32)
    model(s2, s1).abs().mean().backward()
    sar = [p.grad for n, p in model.named_parameters() if n.startswith("sar_encoder")]
    opt = [p.grad for n, p in model.named_parameters() if ".opt_encoder." in n]
    assert sar and opt
    assert all(g is not None and g.abs().sum() > 0 for g in sar)
    assert all(g is not None and g.abs().sum() > 0 for g in opt)


def test_sar_changes_the_output_only_with_fusion() -> None:
    torch.manual_seed(0)
    s2, s1 = _inputs(1, 32, 32)
    for arch, expect_change in [("mmcanet", True), ("mmcanet_optical", False)]:
        model = build_model(arch, "single", **SMALL[arch]).eval()
        with torch.no_grad():
            d = (model(s2, s1) - model(s2, torch.zeros_like(s1))).abs().max()
        assert (d > 1e-6) == expect_change, arch


def test_strategies_compute_different_things() -> None:
    s2, s1 = _inputs(1, 32, 32)
    outs = {}
    for strategy in STRATEGIES:
        torch.manual_seed(0)  # identical initial weights for the shared parts
        model = build_model("mmcanet", strategy, **SMALL["mmcanet"]).eval()
        with torch.no_grad():
            outs[strategy] = model(s2, s1)
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outs[a], outs[b], atol=1e-5), (a, b)


def test_outside_in_keeps_clear_pixels_and_fills_cloud() -> None:
    torch.manual_seed(0)
    # the mask as given (guide_reach 0): the rings follow it exactly
    model = build_model("mmcanet", "outside_in", **SMALL["mmcanet"], stages=3, ring_px=4, guide_reach=0).eval()
    s2, s1 = _inputs(1, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    with torch.no_grad():
        stages = model.forward_stages(s2, s1, mask)
    clear = mask == 0
    assert torch.equal(stages[-1].masked_select(clear.expand_as(s2)), s2.masked_select(clear.expand_as(s2)))
    # the first ring changes only pixels near the border of the cloud, the last one the centre too
    first_changed = (stages[0] - s2).abs().sum(1, keepdim=True) > 0
    assert first_changed[..., 8, 8] and not first_changed[..., 16, 16]
    assert ((stages[-1] - s2).abs().sum(1) > 0)[0, 16, 16]


def test_inference_guide_is_the_opacity_estimate_near_the_mask_and_zero_beyond() -> None:
    """guide_reach r: at inference a given mask is replaced by the opacity net's estimate within r px of
    its cloud (square neighbourhood), 0 beyond; in training, and with r = 0, the mask is used as given."""
    torch.manual_seed(0)
    model = build_model("mmcanet", "single", **SMALL["mmcanet"], guide_reach=3).eval()
    assert model_config("mmcanet")["guide_reach"] == 16  # the default, also for cards written before it existed
    s2, s1 = _inputs(1, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:14, 20:22] = 0.9  # > 0.5: cloud
    mask[..., 0, 0] = 0.5  # not > 0.5: no cloud to be near
    with torch.no_grad():
        res = model.forward_train(s2, s1, mask, judge=False)
        est = torch.sigmoid(res["opacity_logits"])
        near = torch.zeros_like(mask, dtype=torch.bool)
        near[..., 7:17, 17:25] = True
        torch.testing.assert_close(res["cloud"], torch.where(near, est, torch.zeros_like(est)))
        assert float(est[near].min()) > 0  # the estimate is what the guide keeps, not a copy of the mask
        torch.testing.assert_close(model(s2, s1, mask), model._project(res["stages"][-1], res["cloud"]))
        assert torch.equal(model.forward_train(s2, s1, mask, judge=False, guide_reach=0)["cloud"], mask)  # per call
        torch.testing.assert_close(model(s2, s1, mask, guide_reach=0),
                                   model._project(model.forward_train(s2, s1, mask, judge=False, guide_reach=0)
                                                  ["stages"][-1], mask))
        model.guide_reach = 0
        assert torch.equal(model.forward_train(s2, s1, mask, judge=False)["cloud"], mask)
        model.guide_reach = 3
        model.train()
        assert torch.equal(model.forward_train(s2, s1, mask, judge=False)["cloud"], mask)
        model.eval()
        torch.testing.assert_close(model.forward_train(s2, s1, None, judge=False)["cloud"], est)


def test_unknown_names_and_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown strategy"):
        build_model("mmcanet", "nope")
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("unet", "single")
    with pytest.raises(ValueError, match="unknown option"):
        model_config("mmcanet", depth=3)


def test_default_compute_is_within_a_tenth_of_dsen2cr() -> None:
    model = build_model("mmcanet", "single")
    macs = count_macs(model, 256, 256)
    assert macs <= 124e9
    assert count_params(model) < 5_000_000


def test_spectral_projection_keeps_clear_pixels_and_removes_foreign_spectra() -> None:
    from mmcanet.models.spectral import project_to_scene_subspace

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(13, generator=g), torch.rand(13, generator=g)
    mix = torch.rand(1, 32, 32, generator=g)
    pred = (a[:, None, None] * mix + b[:, None, None] * (1 - mix))[None]  # a 1-D scene: two materials
    cloud = torch.zeros(1, 1, 32, 32)
    cloud[..., :16, :] = 1
    foreign = torch.rand(13, generator=g)
    pred[0, :, :16, :] += 0.3 * foreign[:, None, None]  # a spectral shape the clear part does not contain
    out = project_to_scene_subspace(pred, cloud, rank=1)
    assert torch.equal(out[..., 16:, :], pred[..., 16:, :])
    # projected cloudy spectra lie on the line through the clear spectra: residual ~0
    direction = (a - b) / (a - b).norm()
    centred = out[0, :, :16, :].reshape(13, -1) - pred[0, :, 16:, :].reshape(13, -1).mean(1, keepdim=True)
    residual = centred - direction[:, None] * (direction @ centred)[None]
    assert residual.abs().max() < 1e-4
    assert torch.equal(project_to_scene_subspace(pred, cloud, rank=0), pred)


def test_spectral_prior_only_at_inference() -> None:
    torch.manual_seed(0)
    model = build_model("mmcanet", "single", **SMALL["mmcanet"], spectral_rank=2)
    s2, s1 = _inputs(1, 32, 32)
    train_out = model(s2, s1)
    model.eval()
    with torch.no_grad():
        eval_out = model(s2, s1)
        raw = model.forward_stages(s2, s1)[-1]
    assert torch.allclose(train_out.detach(), raw)
    assert not torch.allclose(eval_out, raw)


def test_error_head_never_changes_the_restoration() -> None:
    torch.manual_seed(0)
    plain = build_model("mmcanet", "single", **SMALL["mmcanet"]).eval()
    judged = build_model("mmcanet", "single", **SMALL["mmcanet"], error_head=True).eval()
    missing, unexpected = judged.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("error_head.") for k in missing)
    s2, s1 = _inputs(2, 37, 53)
    mask = (torch.rand(2, 1, 37, 53) > 0.5).float()
    with torch.no_grad():
        for m in (None, mask):
            restored, err = judged.forward_with_error(s2, s1, m)
            assert torch.equal(restored, plain(s2, s1, m))  # bit for bit: the spectral prior included
            assert torch.equal(judged(s2, s1, m), restored)
            assert err.shape == (2, 1, 37, 53) and bool((err > 0).all())
    # and no gradient of the head's loss reaches the restorer
    judged.train()
    res = judged.forward_train(s2, s1)
    res["log_error"].sum().backward()
    assert all(p.grad is None for n, p in judged.named_parameters() if not n.startswith("error_head."))
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in judged.error_head.parameters())
    with pytest.raises(ValueError, match="no error head"):
        plain.forward_with_error(s2, s1)


def test_error_head_option_is_checked_and_off_by_default() -> None:
    assert model_config("mmcanet")["error_head"] is False
    with pytest.raises(ValueError, match="error_head must be true or false"):
        model_config("mmcanet", error_head=1)


def test_laplace_nll_is_minimised_by_the_mean_absolute_error() -> None:
    from mmcanet.losses import laplace_nll

    torch.manual_seed(0)
    pred = torch.rand(2, 13, 16, 16)
    target = pred + 0.05 * torch.randn_like(pred).sign()  # |error| = 0.05 in every band
    scales = [0.01, 0.03, 0.04, 0.05, 0.06, 0.08, 0.2]
    losses = [float(laplace_nll(torch.full((2, 1, 16, 16), float(torch.log(torch.tensor(b)))), pred, target)) for b in scales]
    assert scales[losses.index(min(losses))] == 0.05
