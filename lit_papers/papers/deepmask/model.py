"""DeepMask: Learning to Segment Object Candidates (Pinheiro, Collobert, Dollár, NIPS 2015).

Reads top to bottom like sec. 3 of the paper:

1. a shared trunk (sec. 3.1): VGG-A's eight 3x3 convolutions and its max-pools *except the last*, so a 3 x h x w
   patch gives 512 x h/16 x w/16 features (14 x 14 for the 224 training patch). Injected under the backbone contract
   (``forward -> OrderedDict`` of maps, ``.out_channels``, ``.strides``; the last map is the trunk's output):
   timm's ``vgg11`` (= VGG-A, ImageNet weights) by config in the faithful recipe, or :class:`VGGTrunk` (the same
   layout, narrow, with BatchNorm, from scratch) for CPU;
2. the segmentation branch (sec. 3.1, "Segmentation"): a 1x1 convolution (512 units) + ReLU, then a classification
   layer of ``mask_size x mask_size`` pixel classifiers (56 x 56), each seeing the *whole* feature map. It is
   low-rank: two linear layers without a non-linearity between them (512 x 14 x 14 -> 512 -> 56^2). The output is
   upsampled bilinearly to the patch (224 x 224) at inference;
3. the scoring branch (sec. 3.1, "Scoring"): 2x2 max-pooling, then two fully connected layers with ReLU and
   dropout (512 and 1024 units, "Implementation details") and a linear output: one objectness score per patch.

Both branches are written as convolutions (the first linear layer of each is a convolution whose kernel covers
the whole patch's feature map), so the model applies to any image *densely* (sec. 3.3, "Full Scene Inference"):
every window of the trunk's stride is a patch. The scoring branch's extra 2x2 pooling would halve its output
stride; the paper restores the segmentation branch's stride with an interleaving trick, done here exactly by
pooling with stride 1 and dilating the following convolution by 2 (on a training patch this is identical to
stride-2 pooling followed by the fully connected layer, so there is a single code path).

:meth:`DeepMask.propose` is the full-scene inference: an image pyramid (``scales``: the paper's 2^-2 .. 2^1 in
steps of 2^(1/2)), each scaled image padded by half a patch (so objects at the border are centred in some window),
every window scored, the ``max_proposals`` best over all scales decoded to masks, pasted into the image by bilinear
upsampling, binarised at ``mask_threshold`` (0.2 on COCO, "Implementation details"); a proposal's box is its
mask's bounding box (sec. 4: box proposals from the masks).

Input: images float in [0, 1], normalised inside the model (``mean`` / ``std``: ImageNet's). Outputs: mask logits
(B, mask_size, mask_size) and score logits (B,) for patches; proposals for images.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms


class VGGTrunk(nn.Module):
    """VGG-A's convolutional layout (Simonyan & Zisserman's config A: 1, 1, 2, 2, 2 convolutions per stage) with a
    2x2 max-pool between consecutive stages and none after the last (DeepMask removes pool5). Backbone contract:
    ``forward -> OrderedDict(s1, s2, ...)`` = each stage's output (before the next pool), strides 1, 2, 4, ...
    ``widths`` scales the channels; ``batch_norm`` for training from scratch."""

    def __init__(self, *, stage_convs: Sequence[int] = (1, 1, 2, 2, 2),
                 widths: Sequence[int] = (64, 128, 256, 512, 512), batch_norm: bool = False) -> None:
        super().__init__()
        if len(stage_convs) != len(widths) or not stage_convs:
            raise ValueError("VGGTrunk: stage_convs and widths need the same, non-zero length")
        stages, cin = [], 3
        for i, (n, cout) in enumerate(zip(stage_convs, widths)):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if i > 0 else []
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1)]
                layers += [nn.BatchNorm2d(cout)] if batch_norm else []
                layers += [nn.ReLU(inplace=True)]
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(widths)
        self.strides = [2**i for i in range(len(widths))]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = OrderedDict()
        for stage, stride in zip(self.stages, self.strides):
            x = stage(x)
            out[f"s{stride}"] = x  # (B, C_i, H / stride, W / stride)
        return out


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, height: int, width: int, *, chunk: int = 64) -> torch.Tensor:
    """Bilinear upsampling of window masks into the image. ``probs`` (N, m, m) values of the ``m x m`` grid covering
    each window, ``boxes`` (N, 4) xyxy image pixels (pixel-corner coordinates) of the windows -> (N, H, W) values at
    the image's pixel centres (0 outside each window)."""
    out = probs.new_zeros((len(probs), height, width))
    xs = torch.arange(width, device=probs.device, dtype=probs.dtype) + 0.5  # (W,) pixel centres
    ys = torch.arange(height, device=probs.device, dtype=probs.dtype) + 0.5  # (H,)
    for start in range(0, len(probs), chunk):
        b = boxes[start:start + chunk].to(probs.dtype)  # (n, 4)
        gx = 2 * (xs[None] - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]) - 1  # (n, W) in [-1, 1] inside the window
        gy = 2 * (ys[None] - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]) - 1  # (n, H)
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (n, H, W, 2)
        out[start:start + chunk] = F.grid_sample(probs[start:start + chunk, None], grid, mode="bilinear",
                                                 padding_mode="zeros", align_corners=False)[:, 0]
    return out


class DeepMask(nn.Module):
    """``patch_size``: the training patch (224); the trunk's last stride must divide it into an even ``f x f``
    feature map (14 x 14). ``mask_channels`` / ``low_rank`` / ``mask_size``: the segmentation branch (512 / 512 / 56);
    ``score_hidden``: the scoring branch's two fully connected layers (512, 1024); ``dropout`` 0.5."""

    def __init__(self, *, trunk: nn.Module, patch_size: int = 224, mask_channels: int = 512, low_rank: int = 512,
                 mask_size: int = 56, score_hidden: tuple[int, int] = (512, 1024), dropout: float = 0.5,
                 mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
                 std: tuple[float, float, float] = (0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.trunk = trunk
        self.stride = int(trunk.strides[-1])
        channels = int(trunk.out_channels[-1])
        if patch_size % self.stride or (patch_size // self.stride) % 2:
            raise ValueError(f"patch_size {patch_size} must be an even multiple of the trunk's stride {self.stride} "
                             f"(the scoring branch pools the {patch_size}/{self.stride} feature map 2x2)")
        self.patch_size, self.mask_size = patch_size, mask_size
        self.fsz = patch_size // self.stride  # f: the feature map of one patch is f x f (14)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # segmentation branch: 1x1 conv + ReLU, then the low-rank pixel classifiers (two linear layers, no ReLU)
        self.seg_conv = nn.Sequential(nn.Conv2d(channels, mask_channels, 1), nn.ReLU(inplace=True))
        self.seg_code = nn.Conv2d(mask_channels, low_rank, self.fsz)  # linear over the whole f x f map
        self.seg_pixels = nn.Conv2d(low_rank, mask_size * mask_size, 1)  # one classifier per output pixel
        # scoring branch: 2x2 max-pool, two fully connected layers with ReLU + dropout, a linear score
        h1, h2 = score_hidden
        self.score_fc1 = nn.Conv2d(channels, h1, self.fsz // 2)  # over the pooled (f/2 x f/2) map
        self.score_fc2 = nn.Conv2d(h1, h2, 1)
        self.score_out = nn.Conv2d(h2, 1, 1)
        self.dropout = nn.Dropout(dropout)

    # -- the network ---------------------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The trunk's maps of normalised ``images`` (B, 3, H, W) in [0, 1]."""
        return self.trunk((images - self.mean) / self.std)

    def heads(self, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both branches on the trunk's output (B, C, h, w), densely: -> mask codes (B, R, h - f + 1, w - f + 1) and
        score logits (B, h - f + 1, w - f + 1), one per f x f window (the patch whose features start there)."""
        code = self.seg_code(self.seg_conv(top))
        pooled = F.max_pool2d(self.dropout(top), 2, stride=1)  # (B, C, h - 1, w - 1): every 2x2 pool, interleaved
        x = F.conv2d(pooled, self.score_fc1.weight, self.score_fc1.bias, dilation=2)  # stride-2 pool taps
        x = self.dropout(F.relu(x))
        x = self.dropout(F.relu(self.score_fc2(x)))
        return code, self.score_out(x)[:, 0]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Mask codes (N, R) or (N, R, 1, 1) -> mask logits (N, mask_size, mask_size)."""
        return self.seg_pixels(codes.reshape(len(codes), -1, 1, 1)).reshape(-1, self.mask_size, self.mask_size)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training patches (B, 3, P, P) -> mask logits (B, mask_size, mask_size), score logits (B,)."""
        code, score = self.heads(list(self.features(patches).values())[-1])  # (B, R, 1, 1), (B, 1, 1)
        if code.shape[-2:] != (1, 1):
            raise ValueError(f"patches of {tuple(patches.shape[-2:])} px give {tuple(code.shape[-2:])} windows; "
                             f"training patches must be {self.patch_size} px")
        return self.decode(code), score[:, 0, 0]

    # -- full-scene inference (sec. 3.3) -------------------------------------------------------------------------
    def pyramid(self, image: torch.Tensor, scales: Sequence[float]) -> list[dict]:
        """For each scale: the scaled image padded by half a patch (zeros after normalising) through the trunk.
        Returns dicts ``maps`` (the trunk's OrderedDict), ``codes`` (R, n_y, n_x), ``scores`` (n_y, n_x) logits,
        ``sx`` / ``sy`` (scaled / original size)."""
        _, h, w = image.shape
        half = self.patch_size // 2
        out = []
        for scale in scales:
            hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
            x = F.interpolate(image[None], size=(hs, ws), mode="bilinear", align_corners=False, antialias=scale < 1)
            x = (x - self.mean) / self.std
            extra_y, extra_x = -(hs + 2 * half) % self.stride, -(ws + 2 * half) % self.stride
            x = F.pad(x, (half, half + extra_x, half, half + extra_y))  # (1, 3, hs + P (+), ws + P (+))
            maps = self.trunk(x)
            codes, scores = self.heads(list(maps.values())[-1])
            out.append({"maps": maps, "codes": codes[0], "scores": scores[0], "sx": ws / w, "sy": hs / h})
        return out

    def window_boxes(self, level: dict, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
        """(N, 4) xyxy original-image boxes of the windows (iy, ix) of a pyramid level: window (i, j) covers the
        padded scaled image's pixels [j s, j s + P) x [i s, i s + P), i.e. it is centred at (j s, i s) / scale."""
        s, half = self.stride, self.patch_size / 2
        cx, cy = ix.double() * s / level["sx"], iy.double() * s / level["sy"]
        hx, hy = half / level["sx"], half / level["sy"]
        return torch.stack([cx - hx, cy - hy, cx + hx, cy + hy], dim=1)

    def top_windows(self, levels: list[dict], k: int) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The ``k`` best windows over all levels: [(level, iy, ix, score logits)] per level that has any."""
        flat = torch.cat([lv["scores"].flatten() for lv in levels])
        sizes = [lv["scores"].numel() for lv in levels]
        best = flat.topk(min(k, len(flat))).indices
        owner = torch.bucketize(best, torch.tensor(sizes, device=best.device).cumsum(0), right=True)
        starts = [0] + list(torch.tensor(sizes).cumsum(0).tolist()[:-1])
        picked = []
        for li, lv in enumerate(levels):
            local = best[owner == li] - starts[li]
            if len(local):
                n_x = lv["scores"].shape[1]
                picked.append((li, local // n_x, local % n_x, flat[best[owner == li]]))
        return picked

    def window_masks(self, levels: list[dict], picked) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mask logits (N, m, m), window boxes (N, 4) and score logits (N,) of the picked windows."""
        logits, boxes, scores = [], [], []
        for li, iy, ix, score in picked:
            lv = levels[li]
            logits.append(self.decode(lv["codes"][:, iy, ix].T))  # (n, m, m)
            boxes.append(self.window_boxes(lv, iy, ix))
            scores.append(score)
        return torch.cat(logits), torch.cat(boxes), torch.cat(scores)

    def propose(self, image: torch.Tensor, *, scales: Sequence[float], max_proposals: int = 1000,
                mask_threshold: float = 0.2, nms_iou: float | None = None) -> dict[str, torch.Tensor]:
        """Segment proposals of one image (3, H, W) in [0, 1]: ``masks`` (N, H, W) bool, ``boxes`` (N, 4) xyxy (the
        masks' bounding boxes), ``scores`` (N,) probabilities, best first; empty masks dropped."""
        levels = self.pyramid(image, scales)
        picked = self.top_windows(levels, max_proposals)
        logits, windows, scores = self.window_masks(levels, picked)
        return finish_proposals(logits.sigmoid(), windows, scores.sigmoid(), image.shape[-2:],
                                mask_threshold=mask_threshold, nms_iou=nms_iou)


    finish = staticmethod(lambda *a, **k: finish_proposals(*a, **k))  # for models that wrap a DeepMask (SharpMask)

    def propose_sets(self, image: torch.Tensor, **kwargs) -> dict[str, dict[str, torch.Tensor]]:
        """The proposal sets evaluated for one image: ``{"": self.propose(image, **kwargs)}``."""
        return {"": self.propose(image, **kwargs)}


def finish_proposals(probs: torch.Tensor, windows: torch.Tensor, scores: torch.Tensor, size, *,
                     mask_threshold: float, nms_iou: float | None) -> dict[str, torch.Tensor]:
    """Window mask probabilities (N, m, m) pasted into the image (``size`` (H, W)) and binarised; boxes = the
    masks' bounding boxes; optional box NMS; sorted by score."""
    h, w = int(size[0]), int(size[1])
    masks = paste_masks(probs.float(), windows, h, w) >= mask_threshold  # (N, H, W)
    keep = masks.flatten(1).any(dim=1)
    masks, scores = masks[keep], scores[keep]
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    ar_h, ar_w = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1) + 1
    x0 = torch.where(cols, ar_w, w).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()  # (N, 4) pixel-corner xyxy
    order = scores.argsort(descending=True)
    if nms_iou is not None and len(boxes):
        order = nms(boxes, scores.float(), nms_iou)
    return {"masks": masks[order], "boxes": boxes[order], "scores": scores[order]}


def scale_pyramid(low: float, high: float, step: float = math.sqrt(2)) -> list[float]:
    """low, low * step, ... up to high (the paper: 2^-2 .. 2^1 in steps of 2^(1/2))."""
    n = int(round(math.log(high / low) / math.log(step)))
    return [low * step**i for i in range(n + 1)]
