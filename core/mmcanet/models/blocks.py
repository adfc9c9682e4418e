"""Building blocks shared by the model family: conv blocks, encoders, windowed cross-attention, ASPP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


class ResBlock(nn.Module):
    """Two dense 3x3 convolutions with a residual connection (dense convs are cheap per MAC on CPU).

    Args:
        ch: channels in and out.
        scale: residual scale (keeps deep stacks stable without normalisation layers).
    """

    def __init__(self, ch: int, scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = _act()
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.conv2(self.act(self.conv1(x)))


class Encoder(nn.Module):
    """Multi-level convolutional encoder: level i has widths[i] channels at 1/2**i resolution.

    Args:
        in_ch: input channels (e.g. 13 S2 bands + 1 guidance channel, or 2 S1 bands).
        widths: channels per level; len(widths) levels, the first at full resolution.
    """

    def __init__(self, in_ch: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, widths[0], 3, padding=1), _act(), ResBlock(widths[0]))
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1), _act(), ResBlock(widths[i + 1]))
            for i in range(len(widths) - 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, in_ch, H, W) with H, W multiples of 2**(levels-1) -> list of (B, widths[i], H/2**i, W/2**i)."""
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return feats


class WindowCrossAttention(nn.Module):
    """Optical features (queries) attend to SAR features (keys/values) inside non-overlapping windows.

    Windowed attention keeps the cost linear in the number of pixels (tiles of any size), and every
    window sees the co-located SAR context, which is what cloud filling needs. Windows alternate with a
    half-window shift between calls with ``shift=True`` so information crosses window borders.

    Args:
        dim: channels of both feature maps.
        heads: attention heads (dim must be divisible by heads).
        window: window side in feature pixels.
        shift: shift windows by window // 2 (Swin-style) before partitioning.
    """

    def __init__(self, dim: int, heads: int = 4, window: int = 8, shift: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads, self.window, self.shift = heads, window, shift
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def _windows(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        x = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, s * s, c)

    def forward(self, opt: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        """opt, sar: (B, C, H, W) -> fused optical features (B, C, H, W)."""
        b, c, h, w = opt.shape
        s = self.window
        ph, pw = (-h) % s, (-w) % s
        x = F.pad(opt, (0, pw, 0, ph)).permute(0, 2, 3, 1)
        y = F.pad(sar, (0, pw, 0, ph)).permute(0, 2, 3, 1)
        if self.shift:
            x = torch.roll(x, (-(s // 2), -(s // 2)), dims=(1, 2))
            y = torch.roll(y, (-(s // 2), -(s // 2)), dims=(1, 2))
        hp, wp = x.shape[1], x.shape[2]
        xq, yk = self._windows(x), self._windows(y)
        n, t, _ = xq.shape
        d = c // self.heads
        q = self.q(self.norm_q(xq)).view(n, t, self.heads, d).transpose(1, 2)
        k, v = self.kv(self.norm_kv(yk)).view(n, t, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, c)
        z = xq + self.gamma * self.proj(att)
        z = z + self.ff(self.norm_ff(z))
        z = z.view(b, hp // s, wp // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if self.shift:
            z = torch.roll(z, (s // 2, s // 2), dims=(1, 2))
        return z[:, :h, :w].permute(0, 3, 1, 2).contiguous()


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: parallel dilated 3x3 branches + image pooling, projected back.

    Args:
        ch: input and output channels.
        dilations: dilation rates of the 3x3 branches (a 1x1 branch is always present).
    """

    def __init__(self, ch: int, dilations: tuple[int, ...] = (2, 4, 8)) -> None:
        super().__init__()
        mid = max(ch // 2, 8)
        self.branches = nn.ModuleList([nn.Conv2d(ch, mid, 1)])
        self.branches.extend(nn.Conv2d(ch, mid, 3, padding=d, dilation=d) for d in dilations)
        self.pool = nn.Conv2d(ch, mid, 1)
        self.proj = nn.Sequential(nn.Conv2d(mid * (len(dilations) + 2), ch, 1), _act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ch, H, W) -> (B, ch, H, W) with multiscale context (residual)."""
        outs = [F.leaky_relu(br(x), 0.1) for br in self.branches]
        g = F.leaky_relu(self.pool(x.mean(dim=(2, 3), keepdim=True)), 0.1)
        outs.append(g.expand(-1, -1, x.shape[2], x.shape[3]))
        return x + self.proj(torch.cat(outs, dim=1))


class Decoder(nn.Module):
    """U-Net style decoder: upsample, merge the skip of the same level, refine; last level full resolution.

    Args:
        widths: encoder widths per level (same as the encoder's).
        out_ch: output channels (S2 bands).
    """

    def __init__(self, widths: tuple[int, ...], out_ch: int) -> None:
        super().__init__()
        n = len(widths)
        self.ups = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1) for i in range(n - 1))
        self.merges = nn.ModuleList(nn.Conv2d(2 * widths[i], widths[i], 1) for i in range(n - 1))
        self.blocks = nn.ModuleList(ResBlock(widths[i]) for i in range(n - 1))
        self.head = nn.Conv2d(widths[0], out_ch, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """feats: skips from fine to coarse (the coarsest already fused) -> (B, out_ch, H, W)."""
        x = feats[-1]
        for i in range(len(feats) - 2, -1, -1):
            x = F.interpolate(x, size=feats[i].shape[-2:], mode="bilinear", align_corners=False)
            x = F.leaky_relu(self.ups[i](x), 0.1)
            x = self.blocks[i](self.merges[i](torch.cat([x, feats[i]], dim=1)))
        return self.head(x)


class OpacityNet(nn.Module):
    """Small CNN estimating per-pixel cloud opacity in [0, 1] from the optical input (B, bands, H, W).

    Used by the mask-guided strategies when no cloud mask is given, and as the guidance channel.
    """

    def __init__(self, in_ch: int, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, stride=2, padding=1), _act(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), _act(),
            nn.Conv2d(width, width, 3, padding=1), _act(),
            nn.Conv2d(width, 1, 1),
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_ch, H, W) -> opacity logits (B, 1, H, W)."""
        y = self.body(x)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


class ErrorHead(nn.Module):
    """Per-pixel predicted absolute error of a restoration: the trust layer (see docs/TRUST.md).

    Judges a restoration it cannot change: it reads the cloudy input, the DETACHED restored image, the
    guidance (cloud mask or opacity estimate), the SAR and the per-pixel change, and predicts ``log b``,
    the log scale of a Laplace distribution of the error, where ``b`` is the expected absolute error
    (mean over the bands, reflectance 0-1). Trained with the Laplace negative log-likelihood
    (:func:`mmcanet.losses.laplace_nll`) on a frozen restorer; the idea is the variance head of Nix &
    Weigend (1994), used for cloud removal by UnCRtainTS (Ebel et al., CVPR workshops 2023).

    Args:
        bands: S2 bands.
        width: feature channels (~1.4 GMAC per 256 px tile at 24).
    """

    def __init__(self, bands: int, width: int = 24) -> None:
        super().__init__()
        in_ch = 2 * bands + 1 + 2 + 1
        self.inp = nn.Sequential(nn.Conv2d(in_ch, width, 3, padding=1), _act())
        self.ctx = nn.Sequential(  # half resolution, dilated: context of ~30 px (is this pixel deep in a cloud?)
            nn.Conv2d(width, width, 3, stride=2, padding=1), _act(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), _act(),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), _act(),
        )
        last = nn.Conv2d(width, 1, 1)
        nn.init.constant_(last.bias, -3.5)  # type: ignore[arg-type]  # (bias=True: never None)
        self.out = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), _act(), last)  # starts near exp(-3.5) = 0.03 reflectance

    def forward(self, cloudy: torch.Tensor, restored: torch.Tensor, guide: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """cloudy, restored (B, bands, H, W), guide (B, 1, H, W), s1 (B, 2, H, W), all 0-1 -> log b (B, 1, H, W)."""
        change = (restored - cloudy).abs().mean(1, keepdim=True)
        x = self.inp(torch.cat([cloudy, restored, guide, s1, change], dim=1))
        c = F.interpolate(self.ctx(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.clamp(self.out(torch.cat([x, c], dim=1)), -9.0, 1.0)
