"""Aberman, Wu, Lischinski, Chen, Cohen-Or 2019, "Learning Character-Agnostic Motion for Motion Retargeting
in 2D" (SIGGRAPH / ACM TOG 38(4)), sec. 3-4: the network.

A 2D motion is a (B, 30, T) tensor: 14 root-relative joints + the root velocity, (x, y) each, normalised
(:mod:`lit_papers.ops.motion2d`). Three encoders split it into
* a **motion code** (B, 128, T/8): strided 1D convolutions over time, so its length follows the input;
* a **skeleton (body) code** (B, Cb, 1) and a **view code** (B, Cv, 1): 1D convolutions + pooling over time
  and a global pooling, so they are fixed-size (static); they see the 28 joint channels, not the velocity;
and a **decoder** upsamples [motion code; tiled static codes] back to (B, 30, T).

The skeleton-only variant (2 encoders) has no view encoder; the full variant has all three. Channel widths
follow the authors' release (``common.py``): motion 30-64-96-128, body 28-32-48-64(-16), view 28-32-48-64-8,
decoder 152-128-64-30.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

VELOCITY_CHANNELS = 2  # the last two channels are the root velocity (x, y)


class MotionEncoder(nn.Module):
    """Strided convolutions: each layer reflection-pads (k - 2) / 2, convolves with stride 2, LeakyReLU(0.2).
    (B, C0, T) -> (B, C_last, T / 2**layers); T must be a multiple of 2**layers."""

    def __init__(self, *, channels: list[int], kernel_size: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.ReflectionPad1d((kernel_size - 2) // 2), nn.Conv1d(c_in, c_out, kernel_size, stride=2),
                       nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)
        self.downsampling = 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StaticEncoder(nn.Module):
    """Static (time-invariant) code: per layer reflection pad (k - 1) / 2, stride-1 conv, LeakyReLU(0.2),
    pool by 2 over time; then global pooling over the remaining frames and, with ``out_channels``, a 1x1
    convolution (the authors' "compress"). (B, C0, T) -> (B, C, 1). ``pool``: ``max`` (body) or ``avg`` (view)."""

    def __init__(self, *, channels: list[int], out_channels: int | None = None, kernel_size: int = 7,
                 pool: str = "max") -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        pool_layer = nn.MaxPool1d if pool == "max" else nn.AvgPool1d
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.ReflectionPad1d((kernel_size - 1) // 2), nn.Conv1d(c_in, c_out, kernel_size),
                       nn.LeakyReLU(0.2), pool_layer(2, 2)]
        self.net = nn.Sequential(*layers)
        self.pool = pool
        self.compress = nn.Conv1d(channels[-1], out_channels, 1) if out_channels else None
        self.out_channels = out_channels or channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)  # (B, C, T / 2**layers)
        h = h.amax(dim=-1, keepdim=True) if self.pool == "max" else h.mean(dim=-1, keepdim=True)  # (B, C, 1)
        return self.compress(h) if self.compress is not None else h


class Decoder(nn.Module):
    """Per layer: nearest upsampling x2, reflection pad (k - 1) / 2, conv; dropout 0.2 after the first two
    convolutions; LeakyReLU(0.2) after all but the last. (B, C0, T') -> (B, C_last, T' * 2**layers)."""

    def __init__(self, *, channels: list[int], kernel_size: int = 7, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = len(channels) - 2
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad1d((kernel_size - 1) // 2),
                       nn.Conv1d(c_in, c_out, kernel_size)]
            if i < 2 and dropout > 0:
                layers.append(nn.Dropout(dropout))
            if i != last:
                layers.append(nn.LeakyReLU(0.2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class RetargetNet(nn.Module):
    """Motion + skeleton (+ view) encoders and the decoder.

    ``encode(x)`` -> dict of codes ``motion`` (B, Cm, T/8), ``body`` (B, Cb, 1), ``view`` (B, Cv, 1) (absent in
    the skeleton-only variant); ``decode(motion, body, view)`` tiles the static codes over time and decodes to
    (B, 30, T); ``forward(x)`` reconstructs x; ``retarget(x, target)`` decodes x's motion with ``target``'s
    static codes (skeleton and view; ``keep_view=True`` keeps x's view).
    """

    def __init__(self, *, motion_encoder: MotionEncoder, body_encoder: StaticEncoder, decoder: Decoder,
                 view_encoder: StaticEncoder | None = None) -> None:
        super().__init__()
        self.motion_encoder = motion_encoder
        self.body_encoder = body_encoder
        self.view_encoder = view_encoder
        self.decoder = decoder
        # three stride-2 layers; reflection padding 3 needs >= 4 frames in the deepest layer -> T >= 16
        self.length_multiple = motion_encoder.downsampling
        self.min_length = 2 * motion_encoder.downsampling

    @property
    def factors(self) -> tuple[str, ...]:
        return ("motion", "body", "view") if self.view_encoder is not None else ("motion", "body")

    def check_length(self, x: torch.Tensor) -> None:
        T = x.shape[-1]
        if T % self.length_multiple or T < self.min_length:
            raise ValueError(f"input has {T} frames; the network needs a multiple of {self.length_multiple} "
                             f"and at least {self.min_length} frames (crop or pad the clip)")

    def encode(self, x: torch.Tensor, which: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        self.check_length(x)
        which = which or self.factors
        joints = x[:, :-VELOCITY_CHANNELS]  # (B, 28, T) static encoders ignore the root velocity
        codes = {}
        if "motion" in which:
            codes["motion"] = self.motion_encoder(x)
        if "body" in which:
            codes["body"] = self.body_encoder(joints)
        if "view" in which and self.view_encoder is not None:
            codes["view"] = self.view_encoder(joints)
        return codes

    def decode(self, motion: torch.Tensor, body: torch.Tensor, view: torch.Tensor | None = None) -> torch.Tensor:
        T = motion.shape[-1]
        parts = [motion, body.expand(-1, -1, T)]  # (B, Cb, 1) tiled -> (B, Cb, T')
        if view is not None:
            parts.append(view.expand(-1, -1, T))
        return self.decoder(torch.cat(parts, dim=1))  # (B, Cm + Cb [+ Cv], T') -> (B, 30, T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(**self.encode(x))

    def retarget(self, x: torch.Tensor, target: torch.Tensor, keep_view: bool = False) -> torch.Tensor:
        src = self.encode(x)
        tgt = self.encode(target, which=("body",) if keep_view else ("body", "view"))
        return self.decode(src["motion"], tgt["body"], src.get("view") if keep_view else tgt.get("view"))


# -- losses (sec. 4.2) --------------------------------------------------------------------------------------
def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = 1.0) -> torch.Tensor:
    """mean_b max(0, ||a - p||_2 - ||a - n||_2 + margin) over codes flattened per sample (as
    ``nn.TripletMarginLoss``, eps 1e-6 added to the differences)."""
    a, p, n = (t.reshape(t.shape[0], -1) for t in (anchor, positive, negative))  # (B, D)
    return F.triplet_margin_loss(a, p, n, margin=margin)


def foot_velocity(x: torch.Tensor, foot_channels: tuple[int, ...] = (20, 21, 26, 27)) -> torch.Tensor:
    """Global foot velocity in normalised units: frame difference of the ankle channels plus the root
    velocity channels (the official ``get_foot_vel``). (B, 30, T) -> (B, len(foot_channels), T - 1)."""
    feet = x[:, list(foot_channels)]  # (B, 4, T)
    root_velocity = x[:, -VELOCITY_CHANNELS:, 1:].repeat(1, len(foot_channels) // VELOCITY_CHANNELS, 1)  # (B, 4, T-1)
    return feet[..., 1:] - feet[..., :-1] + root_velocity
