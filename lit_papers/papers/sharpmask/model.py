"""SharpMask: Learning to Refine Object Segments (Pinheiro, Lin, Collobert, Dollár, ECCV 2016).

Reads like sec. 3 of the paper: a trained DeepMask is the bottom-up pass; a top-down pass of refinement modules,
one per pooling stage of the trunk, turns DeepMask's coarse mask *encoding* into a full-resolution mask using the
trunk's features at successively lower layers.

1. Mask encoding: the DeepMask segmentation branch's low-rank code of the patch (its 512-d bottleneck) is mapped
   by a linear layer to a ``k_m^1``-channel map at the trunk's output resolution (f x f, 14 x 14) -- as the
   reference implementation does (``Linear(512, fSz * fSz * km)``);
2. refinement module R^i (sec. 3.2, Fig. 3): the skip features F^i of the trunk at M^i's resolution are reduced
   by a 3x3 convolution (+ ReLU) to ``k_s^i`` channels (so that they do not drown the few mask channels),
   concatenated with the mask features M^i, fused by a 3x3 convolution (+ ReLU) into ``k_m^{i+1}`` channels, and
   upsampled 2x bilinearly: M^{i+1} = up(conv([M^i, conv(F^i)])). One module per pooling stage: for a stride-16
   trunk four modules (14 -> 28 -> 56 -> 112 -> 224), the first taking the stride-16 features, the last the
   stride-2 ones; a final 3x3 convolution gives one mask logit per patch pixel;
3. two-stage training (sec. 3.3): DeepMask is trained first (its checkpoint is given by config: the injected
   ``deepmask`` module's class and ``deepmask_checkpoint``), then frozen -- its parameters never receive a
   gradient and it stays in eval mode (BatchNorm statistics, dropout) -- while only the refinement is trained.
   The objectness score is DeepMask's.

Full-scene inference (sec. 3.4): DeepMask's pyramid scores every window; for the ``max_proposals`` best windows
the refinement runs on crops of the *dense* skip maps (the horizontal convolutions are applied to the whole image
once, as in the paper). :meth:`SharpMask.propose_sets` returns the refined proposals (``""``) and DeepMask's coarse
masks of the very same windows and scores (``"deepmask"``): "the same proposals", refined or not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_papers.ops.checkpoint import find_checkpoint, load_weights


class RefinementModule(nn.Module):
    """R^i: (mask features (B, k_m, h, w), skip features (B, C_f, h, w)) -> (B, k_m', 2h, 2w)."""

    def __init__(self, *, skip_in: int, mask_in: int, skip_out: int, mask_out: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(skip_in, skip_out, 3, padding=1), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(nn.Conv2d(mask_in + skip_out, mask_out, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, mask: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([mask, self.reduce(skip)], dim=1))  # (B, k_m', h, w)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)  # (B, k_m', 2h, 2w)


def load_deepmask(deepmask: nn.Module, path: str) -> None:
    """DeepMask weights from a Lightning checkpoint of its LitModule (``state_dict`` keys ``model.*``) or a plain
    state dict; strict (a checkpoint of another architecture is an error naming the file). ``path`` as given, or
    under ``$LIT_PAPERS_RUNS`` (:func:`~lit_papers.ops.checkpoint.find_checkpoint`), as MultiPathNet's proposals."""
    path = find_checkpoint(path, what="DeepMask (SharpMask's first stage)", fix=(
        "train it first (lit-papers fit --config configs/deepmask/shapes.yaml) or set "
        "model.init_args.model.init_args.deepmask_checkpoint"))
    load_weights(deepmask, path, prefix="model.", plain_ok=True,
                 fix="give sharpmask the DeepMask config (model.init_args.model.init_args.deepmask) it was trained with")


class SharpMask(nn.Module):
    """``deepmask``: a DeepMask-like module (``features``, ``heads``, ``pyramid``, ``top_windows``, ``window_masks``,
    ``finish``, ``trunk.strides``, ``fsz``, ``stride``, ``patch_size``, ``seg_code``); ``mask_channels``: k_m^1 ..
    k_m^{n+1} (n = pooling stages = log2(stride)), ``skip_channels``: k_s^1 .. k_s^n."""

    def __init__(self, *, deepmask: nn.Module, deepmask_checkpoint: str | None = None,
                 mask_channels: Sequence[int] = (32, 16, 8, 4, 2), skip_channels: Sequence[int] = (32, 16, 8, 4),
                 freeze_deepmask: bool = True) -> None:
        super().__init__()
        self.deepmask = deepmask
        if deepmask_checkpoint is not None:
            load_deepmask(deepmask, deepmask_checkpoint)
        self.freeze_deepmask = freeze_deepmask
        if freeze_deepmask:
            for p in deepmask.parameters():
                p.requires_grad_(False)
        stride = int(deepmask.stride)
        n = int(round(math.log2(stride)))
        if 2**n != stride or len(mask_channels) != n + 1 or len(skip_channels) != n:
            raise ValueError(f"a stride-{stride} trunk has {n} pooling stages: give {n + 1} mask_channels and {n} "
                             f"skip_channels (got {len(mask_channels)} and {len(skip_channels)})")
        strides = [int(s) for s in deepmask.trunk.strides]
        self.taps = []
        for k in range(n):
            want = stride // 2**k
            if want not in strides:
                raise ValueError(f"SharpMask needs the trunk's stride-{want} map (refinement {k + 1}); the trunk "
                                 f"returns strides {strides}")
            self.taps.append(len(strides) - 1 - strides[::-1].index(want))  # the deepest map at that stride
        channels = [int(deepmask.trunk.out_channels[t]) for t in self.taps]
        self.fsz, self.km = int(deepmask.fsz), int(mask_channels[0])
        self.encode = nn.Linear(deepmask.seg_code.out_channels, self.km * self.fsz * self.fsz)
        self.refine = nn.ModuleList(
            RefinementModule(skip_in=c, mask_in=mask_channels[k], skip_out=skip_channels[k],
                             mask_out=mask_channels[k + 1]) for k, c in enumerate(channels))
        self.final = nn.Conv2d(mask_channels[-1], 1, 3, padding=1)

    def train(self, mode: bool = True) -> SharpMask:
        super().train(mode)
        if self.freeze_deepmask:
            self.deepmask.eval()  # frozen: BatchNorm statistics and dropout as trained
        return self

    def refined_logits(self, codes: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Codes (N, R) and skip features (N, C_k, f 2^k, f 2^k) per refinement -> mask logits (N, f 2^n, f 2^n)."""
        m = self.encode(codes).view(len(codes), self.km, self.fsz, self.fsz)  # (N, k_m^1, f, f)
        for module, skip in zip(self.refine, skips):
            m = module(m, skip)  # (N, k_m^{k+1}, f 2^{k+1}, ...)
        return self.final(m)[:, 0]

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training patches (B, 3, P, P) -> refined mask logits (B, P, P) and DeepMask's score logits (B,)."""
        maps = list(self.deepmask.features(patches).values())
        code, score = self.deepmask.heads(maps[-1])  # (B, R, 1, 1), (B, 1, 1)
        return self.refined_logits(code.flatten(1), [maps[t] for t in self.taps]), score[:, 0, 0]

    def propose_sets(self, image: torch.Tensor, *, scales: Sequence[float], max_proposals: int = 1000,
                     mask_threshold: float = 0.2, nms_iou: float | None = None, chunk: int = 128
                     ) -> dict[str, dict[str, torch.Tensor]]:
        """``{"": refined proposals, "deepmask": the coarse masks of the same windows}`` of one image (3, H, W)."""
        dm = self.deepmask
        levels = dm.pyramid(image, scales)
        picked = dm.top_windows(levels, max_proposals)
        coarse, windows, scores = dm.window_masks(levels, picked)
        refined = []
        for li, iy, ix, _ in picked:
            lv = levels[li]
            maps = list(lv["maps"].values())
            codes = lv["codes"][:, iy, ix].T  # (n, R)
            for start in range(0, len(codes), chunk):
                ys, xs = iy[start:start + chunk].tolist(), ix[start:start + chunk].tolist()
                skips = []
                for k, t in enumerate(self.taps):  # window (i, j) = rows [i 2^k, (i + f) 2^k) of the stride s/2^k map
                    r, size = 2**k, self.fsz * 2**k
                    skips.append(torch.stack([maps[t][0, :, y * r: y * r + size, x * r: x * r + size]
                                              for y, x in zip(ys, xs)]))
                refined.append(self.refined_logits(codes[start:start + chunk], skips))
        refined_logits = torch.cat(refined) if refined else coarse.new_zeros((0, dm.patch_size, dm.patch_size))
        size = image.shape[-2:]
        probs = scores.sigmoid()
        return {"": dm.finish(refined_logits.sigmoid(), windows, probs, size, mask_threshold=mask_threshold,
                              nms_iou=nms_iou),
                "deepmask": dm.finish(coarse.sigmoid(), windows, probs, size, mask_threshold=mask_threshold,
                                      nms_iou=nms_iou)}
