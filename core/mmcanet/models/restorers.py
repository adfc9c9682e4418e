"""Single-stage restorers: MMCANet (two encoders + cross-attention + ASPP), optical-only, DSen2-CR-style."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .blocks import ASPP, Decoder, Encoder, ResBlock, WindowCrossAttention


class SarEncoder(nn.Module):
    """Sentinel-1 feature extractor (its own weights: SAR statistics differ from optical ones).

    Args:
        widths: channels per level (must match the optical encoder's).
        in_ch: SAR bands (VV, VH).
    """

    def __init__(self, widths: tuple[int, ...], in_ch: int = 2) -> None:
        super().__init__()
        self.encoder = Encoder(in_ch, widths)

    def forward(self, s1: torch.Tensor) -> list[torch.Tensor]:
        """(B, 2, H, W) 0-1 -> multi-level SAR features."""
        return self.encoder(s1)


class MMCARestorer(nn.Module):
    """One MMCANet restoration stage (Zhou et al., IEEE TGRS 63, 2025; our reading of the abstract).

    Optical encoder on (bands + guidance) -> at the two coarsest levels optical features query SAR
    features with windowed cross-attention -> ASPP on the fused coarsest level -> decoder with skips
    (finer levels merge SAR by a 1x1 projection) -> residual added to the optical input.

    Args:
        bands: S2 bands in and out.
        widths: channels per encoder level; the input size is padded to a multiple of 2**(len-1).
        heads: attention heads.
        window: attention window (feature pixels) at each attention level.
        use_sar: False builds the optical-only ablation (same network without any SAR path).
    """

    def __init__(
        self,
        bands: int = 13,
        widths: tuple[int, ...] = (16, 32, 64, 96),
        heads: int = 4,
        window: int = 8,
        use_sar: bool = True,
    ) -> None:
        super().__init__()
        self.use_sar = use_sar
        self.opt_encoder = Encoder(bands + 1, widths)
        n = len(widths)
        self.attn_levels = (n - 2, n - 1)
        if use_sar:
            self.attn = nn.ModuleDict(
                {str(lv): WindowCrossAttention(widths[lv], heads, window, shift=(lv % 2 == 1)) for lv in self.attn_levels}
            )
            self.sar_skips = nn.ModuleList(nn.Conv2d(widths[lv], widths[lv], 1) for lv in range(n - 2))
        self.aspp = ASPP(widths[-1])
        self.bottleneck = ResBlock(widths[-1])
        self.decoder = Decoder(widths, bands)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor, sar_feats: Any) -> torch.Tensor:
        """x: (B, bands, H, W) 0-1, guidance (B, 1, H, W), sar_feats from SarEncoder -> restored (B, bands, H, W)."""
        feats = self.opt_encoder(torch.cat([x, guidance], dim=1))
        if self.use_sar:
            for lv in self.attn_levels:
                feats[lv] = self.attn[str(lv)](feats[lv], sar_feats[lv])
            for lv, proj in enumerate(self.sar_skips):
                feats[lv] = feats[lv] + proj(sar_feats[lv])
        feats[-1] = self.bottleneck(self.aspp(feats[-1]))
        return x + self.decoder(feats)


class DSen2CRRestorer(nn.Module):
    """DSen2-CR-style comparator (Meraner et al., ISPRS J. 2020): S2 and S1 concatenated, residual stack.

    Args:
        bands: S2 bands.
        width: feature channels (256 in the paper).
        depth: residual blocks (16 in the paper), each scaled by 0.1.
    """

    def __init__(self, bands: int = 13, width: int = 256, depth: int = 16) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(bands + 1 + 2, width, 3, padding=1), nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[ResBlock(width, scale=0.1) for _ in range(depth)])
        self.tail = nn.Conv2d(width, bands, 3, padding=1)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor, sar_feats: Any) -> torch.Tensor:
        """sar_feats is the raw S1 tensor (B, 2, H, W) here (channel concatenation, no SAR encoder)."""
        return x + self.tail(self.body(self.head(torch.cat([x, guidance, sar_feats], dim=1))))
