"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders") and the plain
PixelCNN it improves on (van den Oord et al. 2016a, "Pixel Recurrent Neural Networks", sec. 3.4).

An image x (B, 3, H, W) is modelled sub-pixel by sub-pixel (eq. 1): p(x) = prod_i p(x_i | x_<i), the order being
raster order over pixels and, within a pixel, R then G then B (PixelRNN sec. 2.1). Each p(x_i | x_<i) is a 256-way
softmax (PixelRNN sec. 2.4). Every network here maps an image with values in [0, 1] (exact 8-bit values k/255)
to logits (B, 256, 3, H, W): the logits at (c, i, j) may depend only on sub-pixels before (c, i, j) in that order.

Channel groups (PixelRNN sec. 3.4, Fig. 4): every feature map belongs to one of the colours R, G, B (group 0, 1, 2;
contiguous thirds of the channels). At the *current* pixel a feature of group g may read features of group g' < g
(mask type A, first layer: a sub-pixel never sees itself) or g' <= g (mask type B, later layers). Features at other
(earlier) positions are read in full.

Gated PixelCNN (sec. 2.1-2.2, Fig. 2): two stacks remove the blind spot of masked k x k convolutions:
  * the vertical stack: (k//2 + 1) x k convolutions, padded so that the output at row i sees input rows <= i only;
  * the horizontal stack: 1 x (k//2 + 1) convolutions over the current row, columns <= j (the current column with
    the channel mask);
  * the vertical -> horizontal connection: the vertical pre-activations, *shifted down one row* (so that position
    (i, j) receives rows < i only), through a 1x1 convolution, added to the horizontal pre-activations;
  * gated activation (eq. 2): y = tanh(W_f * x) . sigmoid(W_g * x), one convolution giving 2p maps split in two;
  * residual connection in the horizontal stack only (a 1x1 convolution of the gated output added to the input);
  * conditioning on a class (eq. 4): y = tanh(W_f * x + V_f^T h) . sigmoid(W_g * x + V_g^T h), h one-hot,
    a location-independent bias per layer and stack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

COLOURS = 3  # R, G, B
LEVELS = 256  # 8-bit sub-pixel values


def channel_groups(channels: int) -> torch.Tensor:
    """Colour group (0 = R, 1 = G, 2 = B) of each of ``channels`` feature maps: contiguous thirds.
    (channels,) int64. ``channels`` must be a multiple of 3."""
    if channels % COLOURS:
        raise ValueError(f"{channels} channels cannot be split into R/G/B groups: use a multiple of 3")
    return torch.arange(channels) * COLOURS // channels


def masked_kernel(out_groups: torch.Tensor, in_groups: torch.Tensor, kernel: tuple[int, int],
                  centre: tuple[int, int], mask_type: str, *, see_after: bool = False) -> torch.Tensor:
    """The 0/1 mask (out, in, kh, kw) of a convolution whose kernel position ``centre`` is the current pixel.

    Positions before the centre in raster order (rows above; the centre row left of it) are open to every
    input channel; the centre is open from input group g' to output group g when g' < g (``mask_type`` "A") or
    g' <= g ("B"); positions after the centre are closed (``see_after=True`` leaves them open: a kernel whose
    positions after the centre lie in rows the caller has made "past", as the vertical stack does)."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel
    ci, cj = centre
    mask = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    for a in range(kh):
        for b in range(kw):
            if (a, b) < (ci, cj) or (see_after and (a, b) > (ci, cj)):
                mask[:, :, a, b] = 1.0
    allowed = in_groups[None, :] < out_groups[:, None] if mask_type == "A" else in_groups[None, :] <= out_groups[:, None]
    mask[:, :, ci, cj] = allowed.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 mask (:func:`masked_kernel`) at every call, so
    that masked weights get zero gradient and stay inert. ``padding`` (left, right, top, bottom) as ``F.pad``."""

    def __init__(self, *, in_channels: int, out_channels: int, kernel: tuple[int, int], mask: torch.Tensor,
                 padding: tuple[int, int, int, int], bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel, padding=0, bias=bias)
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit the weight {tuple(self.weight.shape)}")
        self.register_buffer("mask", mask, persistent=False)
        self.pad = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)


def pixelcnn_conv(in_channels: int, out_channels: int, k: int, mask_type: str, *,
                  in_groups: torch.Tensor | None = None, out_groups: torch.Tensor | None = None) -> MaskedConv2d:
    """PixelRNN sec. 3.4: a k x k convolution masked to the current row's left part and the rows above
    ("same" output size). Groups default to :func:`channel_groups` of the channel counts."""
    in_groups = channel_groups(in_channels) if in_groups is None else in_groups
    out_groups = channel_groups(out_channels) if out_groups is None else out_groups
    mask = masked_kernel(out_groups, in_groups, (k, k), (k // 2, k // 2), mask_type)
    return MaskedConv2d(in_channels=in_channels, out_channels=out_channels, kernel=(k, k), mask=mask,
                        padding=(k // 2, k // 2, k // 2, k // 2))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> the same shape, moved down one row (row 0 is zero): row i holds input row i - 1."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def gate(x: torch.Tensor) -> torch.Tensor:
    """Eq. 2: (B, 2p, H, W) -> tanh(first p maps) * sigmoid(last p maps), (B, p, H, W)."""
    f, g = x.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    """One layer of Fig. 2: (v, h, cond) -> (v', h'). ``v``, ``h`` (B, p, H, W); ``cond`` (B, 2p) or None.

    The 2p pre-activation maps are laid out [f | g], each half in R/G/B thirds, so that the gate multiplies
    features of the same colour group. ``first``: mask type A in the horizontal stack, no residual (the input is
    the image, ``in_channels`` = 3)."""

    def __init__(self, *, in_channels: int, channels: int, kernel_size: int, first: bool = False,
                 num_classes: int = 0, residual: bool = True) -> None:
        super().__init__()
        p, k = channels, kernel_size
        two_p_groups = torch.cat([channel_groups(p), channel_groups(p)])  # [f | g]
        in_groups = channel_groups(in_channels)
        mask_type = "A" if first else "B"
        # vertical stack: kernel rows i - k//2 .. i (padding above only); every column of the kernel is open,
        # the vertical stack never feeds the output without the down-shift, so no channel mask is needed
        self.v_conv = nn.Conv2d(in_channels, 2 * p, (k // 2 + 1, k))
        self.v_pad = (k // 2, k // 2, k // 2, 0)
        # horizontal stack: kernel columns j - k//2 .. j of the current row; the current column channel-masked
        h_mask = masked_kernel(two_p_groups, in_groups, (1, k // 2 + 1), (0, k // 2), mask_type)
        self.h_conv = MaskedConv2d(in_channels=in_channels, out_channels=2 * p, kernel=(1, k // 2 + 1),
                                   mask=h_mask, padding=(k // 2, 0, 0, 0))
        # vertical -> horizontal: reads the down-shifted vertical maps (rows < i: every channel may be read)
        self.v_to_h = nn.Conv2d(2 * p, 2 * p, 1)
        # horizontal 1x1 output at the current pixel: channel mask type B
        out_mask = masked_kernel(channel_groups(p), channel_groups(p), (1, 1), (0, 0), "B")
        self.h_out = MaskedConv2d(in_channels=p, out_channels=p, kernel=(1, 1), mask=out_mask, padding=(0, 0, 0, 0))
        self.residual = residual and not first
        # eq. 4: V^T h for a one-hot h (a learned bias per class), one for each stack
        self.v_cond = nn.Linear(num_classes, 2 * p, bias=False) if num_classes else None
        self.h_cond = nn.Linear(num_classes, 2 * p, bias=False) if num_classes else None

    def forward(self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        v_pre = self.v_conv(F.pad(v, self.v_pad))  # (B, 2p, H, W): rows <= i of v
        if cond is not None and self.v_cond is not None:
            v_pre = v_pre + self.v_cond(cond)[:, :, None, None]  # (B, 2p, 1, 1), the same at every location
        h_pre = self.h_conv(h) + self.v_to_h(down_shift(v_pre))  # rows < i from v, row i (cols <= j) from h
        if cond is not None and self.h_cond is not None:
            h_pre = h_pre + self.h_cond(cond)[:, :, None, None]
        v_new = gate(v_pre)
        h_new = self.h_out(gate(h_pre))
        if self.residual:
            h_new = h_new + h
        return v_new, h_new


class OutputHead(nn.Module):
    """PixelRNN sec. 3.4 / Table 4: ReLU, 1x1 masked conv (type B), ReLU, 1x1 masked conv to 3 x 256 logits.
    (B, p, H, W) -> (B, 256, 3, H, W); the logits of colour c come from features of group c only."""

    def __init__(self, *, channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = pixelcnn_conv(channels, hidden, 1, "B")
        logit_groups = torch.arange(COLOURS).repeat_interleave(LEVELS)  # (768,): [R x 256, G x 256, B x 256]
        self.logits = pixelcnn_conv(hidden, COLOURS * LEVELS, 1, "B", out_groups=logit_groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.logits(F.relu(self.hidden(F.relu(h))))  # (B, 768, H, W)
        b, _, height, width = out.shape
        return out.view(b, COLOURS, LEVELS, height, width).transpose(1, 2)  # (B, 256, 3, H, W)


def scale_input(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1] (the network's input scale; ours, the paper does not state one)."""
    return x * 2.0 - 1.0


def one_hot(labels: torch.Tensor | None, num_classes: int, dtype: torch.dtype) -> torch.Tensor | None:
    if labels is None or num_classes == 0:
        return None
    return F.one_hot(labels.long(), num_classes).to(dtype)  # (B, K)


class GatedPixelCNN(nn.Module):
    """Fig. 2 stacked ``layers`` times, then :class:`OutputHead`. ``forward(x (B, 3, H, W) in [0, 1], labels
    (B,) | None) -> logits (B, 256, 3, H, W)``. ``num_classes`` > 0 makes it class-conditional (eq. 4)."""

    def __init__(self, *, channels: int = 384, layers: int = 20, kernel_size: int = 5, first_kernel_size: int = 7,
                 head_channels: int = 1024, num_classes: int = 0) -> None:
        super().__init__()
        if kernel_size % 2 == 0 or first_kernel_size % 2 == 0:
            raise ValueError("kernel sizes must be odd (a centre pixel)")
        self.num_classes = num_classes
        # pixels the output at (i, j) can reach: the vertical stack grows by k//2 rows up and columns each side
        # per layer (the first by first_kernel_size//2), plus the one-row down-shift into the horizontal stack
        margin = first_kernel_size // 2 + (layers - 1) * (kernel_size // 2)
        self.receptive_field = (margin + 1, margin, margin)  # (rows up, columns left, columns right)
        self.layers = nn.ModuleList(
            [GatedLayer(in_channels=COLOURS, channels=channels, kernel_size=first_kernel_size, first=True,
                        num_classes=num_classes)]
            + [GatedLayer(in_channels=channels, channels=channels, kernel_size=kernel_size, num_classes=num_classes)
               for _ in range(layers - 1)])
        self.head = OutputHead(channels=channels, hidden=head_channels)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the last horizontal-stack maps (B, p, H, W), before the output head."""
        cond = one_hot(labels, self.num_classes, x.dtype)
        v = h = scale_input(x)
        for layer in self.layers:
            v, h = layer(v, h, cond)
        return h

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, labels))


class PlainPixelCNN(nn.Module):
    """The PixelCNN of PixelRNN sec. 3.4 (with the blind spot): a k x k mask-A convolution, then ``layers - 1``
    residual blocks h + conv_B(ReLU(h)) of k x k mask-B convolutions, then :class:`OutputHead`. ReLU, no gates,
    one stack. ``num_classes`` > 0 adds the same per-layer class bias as the gated model (eq. 4 without gates)."""

    def __init__(self, *, channels: int = 384, layers: int = 20, kernel_size: int = 5, first_kernel_size: int = 7,
                 head_channels: int = 1024, num_classes: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        margin = first_kernel_size // 2 + (layers - 1) * (kernel_size // 2)
        self.receptive_field = (margin, margin, margin)  # (rows up, columns left, columns right)
        self.first = pixelcnn_conv(COLOURS, channels, first_kernel_size, "A")
        self.blocks = nn.ModuleList(pixelcnn_conv(channels, channels, kernel_size, "B") for _ in range(layers - 1))
        self.cond = (nn.ModuleList(nn.Linear(num_classes, channels, bias=False) for _ in range(layers))
                     if num_classes else None)
        self.head = OutputHead(channels=channels, hidden=head_channels)

    def features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> the last block's maps (B, p, H, W), before the output head."""
        cond = one_hot(labels, self.num_classes, x.dtype)
        h = self.first(scale_input(x))
        if cond is not None:
            h = h + self.cond[0](cond)[:, :, None, None]
        for i, block in enumerate(self.blocks):
            update = block(F.relu(h))
            if cond is not None:
                update = update + self.cond[i + 1](cond)[:, :, None, None]
            h = h + update
        return h

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, labels))


def context_window(model: nn.Module, i: int, j: int, height: int, width: int) -> tuple[slice, slice, int, int]:
    """The rows and columns the output at (i, j) can depend on (``model.receptive_field`` = (up, left, right);
    the whole image without one), and (i, j) inside that window."""
    up, left, right = getattr(model, "receptive_field", (height, width, width))
    r0, c0 = max(0, i - up), max(0, j - left)
    return slice(r0, i + 1), slice(c0, min(width, j + right + 1)), i - r0, j - c0


@torch.no_grad()
def sample(model: nn.Module, labels: torch.Tensor | None, *, shape: tuple[int, int, int] = (3, 32, 32),
           num: int | None = None, generator: torch.Generator | None = None, temperature: float = 1.0
           ) -> torch.Tensor:
    """Draw images sub-pixel by sub-pixel (raster order over pixels, R -> G -> B within a pixel), each value
    sampled from its 256-way softmax given everything drawn before. ``model`` has ``features(x, labels)``, a
    per-pixel ``head`` and a ``receptive_field`` (both networks above). Savings that change no number: the
    features for (i, j) are computed on the window of rows and columns that (i, j) can see (:func:`context_window`:
    no layer reads a later row, and nothing outside the receptive field reaches (i, j); zero padding at the
    window's edge only changes positions that (i, j) does not read), and the 1x1 head only at (i, j).
    Returns floats k/255 in [0, 1], (N, 3, H, W); ``labels`` (N,) or None (then ``num`` images)."""
    n = len(labels) if labels is not None else int(num)
    c, height, width = shape
    param = next(model.parameters())
    x = torch.zeros(n, c, height, width, device=param.device, dtype=param.dtype)
    for i in range(height):
        for j in range(width):
            rows, cols, wi, wj = context_window(model, i, j, height, width)
            for k in range(c):
                feats = model.features(x[:, :, rows, cols], labels)[:, :, wi : wi + 1, wj : wj + 1]  # (N, p, 1, 1)
                logits = model.head(feats)[:, :, k, 0, 0].float() / temperature  # (N, 256)
                value = torch.multinomial(F.softmax(logits, dim=1), 1, generator=generator)[:, 0]
                x[:, k, i, j] = value.to(x.dtype) / (LEVELS - 1)
    return x
