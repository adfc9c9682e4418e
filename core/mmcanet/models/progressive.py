"""Progressive restoration strategies wrapping a single-stage restorer: the full cloud-removal network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..names import STRATEGIES
from .blocks import ErrorHead, OpacityNet
from .error_features import FeatureErrorModel
from .spectral import project_to_scene_subspace


class CloudRemovalNet(nn.Module):
    """A restorer (one stage) run under a progressive strategy; the object users and the engine call.

    Strategies (see docs/MODEL.md):
      - ``single``: one pass.
      - ``multistage``: ``stages`` restorers with their own weights, each refining the previous output.
      - ``iterative``: one restorer applied ``stages`` times, its output fed back as the optical input.
      - ``thin_to_thick``: an opacity net estimates cloud opacity ``a`` and a learned per-band cloud
        colour ``A``; thin cloud is inverted physically, ``(x - a A) / (1 - a)`` with ``a`` capped, then
        a restorer fills what stays (thick cloud) guided by ``a``.
      - ``outside_in``: cloud regions are filled from their borders inward in ``stages`` rings
        (dilation of the clear area by ``ring_px`` per ring); each ring is predicted from the image
        where the previous rings are already restored.

    Args:
        make_restorer: builds one stage ``restorer(x, guidance, sar_ctx) -> x_restored``.
        sar_encoder: shared SAR feature extractor, or None (raw S1 or no SAR passed as context).
        strategy: one of STRATEGIES.
        stages: number of stages / iterations / rings (ignored for single and thin_to_thick).
        bands: S2 bands.
        pad_multiple: inputs are reflect-padded to a multiple of this and cropped back.
        ring_px: outside-in ring width in pixels.
        pass_raw_sar: give the raw S1 tensor as context (channel-concatenation restorers).
        spectral_rank: at inference, cloudy pixels are projected onto the mean + this many principal
            spectral components of the tile's clear pixels (0 = off); see models/spectral.py.
        error_head: add an :class:`~.blocks.ErrorHead` (the trust layer): a per-pixel predicted absolute
            error of the restoration, computed from the detached output so it never changes it.
        guide_reach: at inference, when a cloud mask is given, the network is guided by its own opacity
            estimate within this many pixels of the mask (mask > 0.5) and by 0 beyond; 0 = by the mask as
            given. A detector's mask is binary and generous; the opacity net says how much of the ground
            shows through inside it (docs/QUALITY.md section 8). Training always uses the mask as given.
    """

    def __init__(
        self,
        make_restorer: Callable[[], nn.Module],
        sar_encoder: nn.Module | None,
        strategy: str = "single",
        stages: int = 2,
        bands: int = 13,
        pad_multiple: int = 8,
        ring_px: int = 24,
        pass_raw_sar: bool = False,
        spectral_rank: int = 0,
        error_head: bool = False,
        guide_reach: int = 0,
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        self.strategy, self.stages, self.bands = strategy, max(1, stages), bands
        self.pad_multiple, self.ring_px, self.pass_raw_sar = pad_multiple, ring_px, pass_raw_sar
        self.spectral_rank = spectral_rank
        self.guide_reach = guide_reach
        n_restorers = self.stages if strategy == "multistage" else 1
        self.restorers = nn.ModuleList(make_restorer() for _ in range(n_restorers))
        self.sar_encoder = sar_encoder
        self.opacity = OpacityNet(bands)
        self.cloud_colour = nn.Parameter(torch.full((1, bands, 1, 1), 0.35))
        self.error_head = ErrorHead(bands) if error_head else None
        self.error_predictor: FeatureErrorModel | None = None
        """The fitted feature predictor of the trust layer (set from the model card's ``trust.predictor`` by
        :func:`mmcanet.modelfile.load_model`); when set, it predicts the error instead of the head."""

    @property
    def predicts_error(self) -> bool:
        """Whether :meth:`forward_with_error` can run (a fitted feature predictor or a trained error head)."""
        return self.error_predictor is not None or self.error_head is not None

    # ---- helpers -------------------------------------------------------------------------------
    def _pad(self, t: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
        m = self.pad_multiple
        h, w = t.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph == 0 and pw == 0:
            return t
        if mode == "reflect" and (ph >= h or pw >= w):
            mode = "replicate"
        return F.pad(t, (0, pw, 0, ph), mode=mode)

    def _guide(self, mask: torch.Tensor | None, estimate: torch.Tensor, reach: int | None = None) -> torch.Tensor | None:
        """The cloud guide of this pass (unpadded): the given mask, or at inference with ``guide_reach`` (or
        ``reach`` when given) the opacity estimate within that many px of it (square neighbourhood) and 0
        beyond; None = no mask."""
        r = self.guide_reach if reach is None else reach
        if mask is None or r <= 0 or self.training:
            return mask
        near = F.max_pool2d((mask > 0.5).to(estimate.dtype), kernel_size=2 * r + 1, stride=1, padding=r)
        return estimate * near

    def _sar_ctx(self, s1: torch.Tensor) -> Any:
        if self.sar_encoder is not None:
            return self.sar_encoder(s1)
        return s1 if self.pass_raw_sar else None

    # ---- forward -------------------------------------------------------------------------------
    def forward_train(
        self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None, judge: bool = True,
        guide_reach: int | None = None,
    ) -> dict[str, Any]:
        """Run the strategy and keep every intermediate.

        Args:
            s2: cloudy optical (B, bands, H, W), 0-1 reflectance.
            s1: SAR (B, 2, H, W), 0-1 (normalised dB); zeros when SAR is missing.
            mask: optional cloud mask/opacity (B, 1, H, W) in [0, 1]; estimated when None.
            judge: run the error head (when the network has one).
            guide_reach: this pass's ``guide_reach`` (None: the network's; 0: the mask as given).

        Returns:
            dict with ``stages`` (list of (B, bands, H, W), the last is the output) and
            ``opacity_logits`` (B, 1, H, W) of the opacity net, ``cloud`` (B, 1, H, W) the cloud guide the
            pass used (the mask, the guide of ``guide_reach``, or the estimate); with an error head also ``restored``
            (B, bands, H, W), the detached output :meth:`forward` would return in this mode, and
            ``log_error`` (B, 1, H, W), the log of its predicted absolute error (mean over bands): from the
            fitted feature predictor when one is set, else from the head.
        """
        h, w = s2.shape[-2:]
        x0 = self._pad(s2)
        sar = self._pad(s1)
        logits = self.opacity.logits(x0)
        est = torch.sigmoid(logits)
        mask = self._guide(mask, est[..., :h, :w], guide_reach)
        guide = self._pad(mask, "replicate") if mask is not None else est
        ctx = self._sar_ctx(sar)
        stages: list[torch.Tensor] = []
        s = self.strategy
        if s == "single":
            stages.append(self.restorers[0](x0, guide, ctx))
        elif s in ("multistage", "iterative"):
            x = x0
            for k in range(self.stages):
                net = self.restorers[k] if s == "multistage" else self.restorers[0]
                x = net(x, guide, ctx)
                stages.append(x)
        elif s == "thin_to_thick":
            a = torch.clamp(est, 0.0, 0.7)
            colour = torch.clamp(self.cloud_colour, 0.0, 1.0)
            thin_free = torch.clamp((x0 - a * colour) / (1.0 - a), 0.0, 1.5)
            stages.append(thin_free)
            stages.append(self.restorers[0](thin_free, est, ctx))
        else:  # outside_in
            cloud = guide
            clear = 1.0 - cloud
            filled = torch.zeros_like(cloud)
            x = x0
            for k in range(self.stages):
                if k == self.stages - 1:
                    reach = torch.ones_like(cloud)
                else:
                    r = self.ring_px * (k + 1)
                    reach = F.max_pool2d(clear, kernel_size=2 * r + 1, stride=1, padding=r)
                ring = torch.clamp(reach * cloud - filled, 0.0, 1.0)
                y = self.restorers[0](x, cloud - filled, ctx)
                x = x * (1.0 - ring) + y * ring
                filled = filled + ring
                stages.append(x)
        stages = [t[..., :h, :w] for t in stages]
        result: dict[str, Any] = {"stages": stages, "opacity_logits": logits[..., :h, :w]}
        cloud = mask if mask is not None else torch.sigmoid(result["opacity_logits"])
        result["cloud"] = cloud
        if judge and self.predicts_error:
            # the head / predictor judges the restoration, it never trains or changes it
            restored = self._project(stages[-1].detach(), cloud.detach())
            if self.error_predictor is not None:
                opacity = torch.sigmoid(result["opacity_logits"]).detach()
                log_b = self.error_predictor.log_error(s2, restored, cloud.detach(), s1, opacity)
            else:
                assert self.error_head is not None
                log_b = self.error_head(x0, self._pad(restored), guide.detach(), sar)[..., :h, :w]
            result.update(restored=restored, log_error=log_b)
        return result

    def _project(self, out: torch.Tensor, cloud: torch.Tensor) -> torch.Tensor:
        """The spectral-subspace prior of eval mode (identity in training mode or with rank 0)."""
        if self.spectral_rank > 0 and not self.training:
            return project_to_scene_subspace(out, cloud, self.spectral_rank)
        return out

    def forward_stages(self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Outputs of every stage (B, bands, H, W); the last one is the restored image."""
        return list(self.forward_train(s2, s1, mask)["stages"])

    def restore_with_opacity(
        self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward`'s output and the opacity net's estimate (B, 1, H, W) in [0, 1], from one pass."""
        res = self.forward_train(s2, s1, mask, judge=False)
        return self._project(res["stages"][-1], res["cloud"]), torch.sigmoid(res["opacity_logits"])

    def forward(
        self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None, guide_reach: int | None = None
    ) -> torch.Tensor:
        """Restore: s2 (B, bands, H, W) 0-1, s1 (B, 2, H, W) 0-1, optional mask -> (B, bands, H, W) 0-1 (unclamped).

        In eval mode with ``spectral_rank > 0`` the cloudy pixels (the given mask, else the opacity
        estimate) are kept in the scene's clear spectral subspace (models/spectral.py).
        """
        res = self.forward_train(s2, s1, mask, judge=False, guide_reach=guide_reach)
        return self._project(res["stages"][-1], res["cloud"])

    def forward_with_error(
        self, s2: torch.Tensor, s1: torch.Tensor, mask: torch.Tensor | None = None, guide_reach: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Restore and predict the error of the restoration in the same pass.

        Args:
            s2, s1, mask, guide_reach: as :meth:`forward`.

        Returns:
            ``(restored, error)``: restored (B, bands, H, W) 0-1 unclamped, exactly what :meth:`forward`
            returns, and its predicted absolute error (B, 1, H, W), mean over bands, reflectance 0-1,
            before the model card's calibration scale.

        Raises:
            ValueError: when the network has neither a fitted feature predictor nor an error head.
        """
        if not self.predicts_error:
            raise ValueError("this network cannot predict its error: no fitted trust predictor (model card "
                             "trust.predictor) and no error head (model config error_head = false)")
        res = self.forward_train(s2, s1, mask, guide_reach=guide_reach)
        return res["restored"], torch.exp(res["log_error"])

    def set_strategy(self, strategy: str) -> None:
        """Switch strategy at inference where the weights allow it (not to/from multistage)."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if (strategy == "multistage") != (self.strategy == "multistage") and len(self.restorers) != self.stages:
            raise ValueError(
                f"this model was trained as {self.strategy!r}; 'multistage' needs its own per-stage weights"
            )
        self.strategy = strategy
