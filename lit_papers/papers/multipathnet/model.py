"""A MultiPath Network for Object Detection (Zagoruyko, Lerer, Lin, Pinheiro, Gross, Chintala, Dollár, BMVC 2016).

Fast R-CNN (Girshick 2015) on object proposals given from outside (DeepMask / SharpMask), with three changes that
let information flow along several paths (sec. 3 of the paper, Fig. 1); each is a constructor argument, so the
paper's ablation is a set of configs:

1. **Foveal regions** (sec. 3.2, ``region_scales``): every proposal is looked at through four crops with the same
   centre and 1x, 1.5x, 2x and 4x its width and height (:func:`foveal_regions`). Each crop is RoI-pooled
   (7 x 7) and goes through *its own* fully connected layers (fc6, fc7; :class:`MultiPathHead`); the four fc7
   outputs are concatenated and feed the classifier and the box regressor. ``[1.0]`` is Fast R-CNN's single
   region.
2. **Skip connections** (sec. 3.1, ``region_strides``): a region's RoI features are pooled not only from conv5
   (stride 16) but also from conv4 (stride 8) and conv3 (stride 4) of the same backbone (maps chosen by stride,
   the backbone contract). Following the reference implementation (``conv345Combine``): conv3 enters the 1x
   region only, conv4 the 1x, 1.5x and 2x regions, conv5 all four; each pooled map is L2-normalised over the
   whole RoI (C x 7 x 7), the normalised maps are concatenated along channels, multiplied by a constant (1000)
   and reduced by a 1 x 1 convolution to conv5's channel count, so that fc6 keeps the input size of the
   ImageNet classifier (:class:`RegionPath`). A region pooled from one map only is plain Fast R-CNN (no
   normalisation, no 1 x 1 convolution).
3. **Integral loss** (sec. 3.3, ``iou_thresholds``): the Fast R-CNN loss at a single foreground threshold u = 0.5
   rewards a box that barely overlaps the object as much as a tight one, while COCO's AP averages over IoU 0.5 to
   0.95. The paper integrates the loss over u, L = int_50^100 L_u du, approximated by n = 6 classifiers (one
   softmax head each) at u in {0.50, 0.55, ..., 0.75}: L = 1/n sum_u L(p_u, k*_u, t, t*), where k*_u is the
   proposal's class if its IoU with it is >= u, else background (:class:`IntegralLoss`). At inference the n
   classifiers' softmax outputs are averaged (:class:`IntegralPredictor`). One threshold ``[0.5]`` is Fast
   R-CNN's loss exactly.

Box regression, RoI sampling (25% foreground at IoU >= 0.5, the rest background) and the per-class NMS are Fast
R-CNN's (the shared :class:`lit_papers.detection.roi_heads.RoIHeads`, which adds the ground-truth boxes to the
proposals during training). Proposals come from a ``proposals`` module: :class:`MaskProposals` wraps a trained
DeepMask or SharpMask given by config (``class_path`` + checkpoint under ``$LIT_PAPERS_RUNS``, never imported
from its paper folder); :class:`GridProposals` is a fixed set of sliding windows that needs no checkpoint (tests,
tiny configs).

Input: a list of images float (3, H_i, W_i) in [0, 1] (normalised inside, ImageNet statistics). Boxes xyxy in
continuous pixel coordinates (corners). Output as the other detectors (``lit_papers.detection.two_stage``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection.roi_heads import fastrcnn_loss

from lit_papers.backbones.timm_backbone import timm_classifier_mlp
from lit_papers.detection.box_heads import FCHead, fc_head_from_classifier
from lit_papers.detection.poolers import level_op
from lit_papers.detection.roi_heads import RoIHeads
from lit_papers.detection.two_stage import TwoStageDetector
from lit_papers.ops.checkpoint import find_checkpoint, load_weights

# -- proposals ---------------------------------------------------------------------------------------------------


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The proposal model's checkpoint: ``path``, or ``path`` under ``$LIT_PAPERS_RUNS`` (:func:`find_checkpoint`)."""
    return find_checkpoint(path, what="proposal model", fix=(
        "train it first (e.g. lit-papers fit --config configs/deepmask/shapes.yaml) or set "
        "model.init_args.model.init_args.proposals.init_args.checkpoint"))


def load_lit_weights(module: nn.Module, path: str | os.PathLike, *, prefix: str = "model.") -> Path:
    """Load a Lightning checkpoint's ``state_dict`` entries under ``prefix`` (or a plain state dict) into
    ``module``, strictly; an architecture mismatch is an error naming the file."""
    file = resolve_checkpoint(path)
    load_weights(module, file, prefix=prefix, plain_ok=True,
                 fix="configure the proposal model exactly as it was trained (its config's model.init_args.model)")
    return file


def image_key(image: torch.Tensor) -> str:
    return hashlib.sha1(image.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


class MaskProposals(nn.Module):
    """Box proposals of a trained DeepMask or SharpMask (the masks' bounding boxes, best first).

    ``model``: the proposal network built from its own config (``class_path`` + ``init_args``), any module with
    ``propose_sets(image, scales=..., max_proposals=..., mask_threshold=..., nms_iou=...) -> {name: {"boxes"}}``;
    ``checkpoint``: its Lightning checkpoint (a path, or a path under ``$LIT_PAPERS_RUNS``), None = keep its
    initial weights (tests). The network is frozen and always in eval mode; an image's proposals are computed
    once and cached by the image's content (the paper computes them offline), in memory and, with ``cache_dir``
    (a path, relative ones under ``$LIT_PAPERS_RUNS``), on disk: one file per image in a subfolder named by a hash
    of the network's weights and the options, written atomically, so that the arms of an ablation share them.
    ``proposal_set``: which set of ``propose_sets`` ("" = the model's own proposals).
    ``__call__(images) -> [(N_i, 4) xyxy]``.
    """

    def __init__(self, *, model: nn.Module, checkpoint: str | None = None, scales: Sequence[float] = (1.0,),
                 max_proposals: int = 1000, mask_threshold: float = 0.2, nms_iou: float | None = None,
                 proposal_set: str = "", cache_dir: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.loaded_from = None if checkpoint is None else str(load_lit_weights(model, checkpoint))
        if checkpoint is None:
            warnings.warn(f"MaskProposals: no checkpoint given, the proposals come from an untrained "
                          f"{type(model).__name__} (fine for tests; for a run set proposals.init_args.checkpoint)",
                          stacklevel=2)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.options = {"scales": [float(s) for s in scales], "max_proposals": int(max_proposals),
                        "mask_threshold": float(mask_threshold), "nms_iou": nms_iou}
        self.proposal_set = proposal_set
        self.cache: dict[str, torch.Tensor] = {}
        self.cache_root = None
        if cache_dir is not None:
            root = Path(cache_dir)
            self.cache_root = root if root.is_absolute() else Path(os.environ.get("LIT_PAPERS_RUNS", "runs")) / root
        self.cache_dir: Path | None = None  # set at the first call, from the weights then in use
        self.model.eval()

    def train(self, mode: bool = True) -> MaskProposals:
        super().train(mode)
        self.model.eval()  # frozen: BatchNorm statistics and dropout as trained
        return self

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for image in images:
            key = image_key(image)
            if key not in self.cache:
                self.cache[key] = self._load_or_propose(key, image)
            out.append(self.cache[key].to(image.device))
        return out

    def _folder(self) -> Path:
        """The disk cache's subfolder: named by a hash of the proposal network's weights (as used, e.g. after a
        MultiPathNet checkpoint restored them) and the options, so that other weights never read these boxes."""
        if self.cache_dir is None:
            digest = hashlib.sha1(repr((self.options, self.proposal_set, type(self.model).__name__)).encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
            self.cache_dir = self.cache_root / digest.hexdigest()[:16]
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            (self.cache_dir / "identity.txt").write_text(f"{type(self.model).__name__} {self.options} "
                                                         f"set {self.proposal_set!r} from {self.loaded_from}\n")
        return self.cache_dir

    def _load_or_propose(self, key: str, image: torch.Tensor) -> torch.Tensor:
        file = None if self.cache_root is None else self._folder() / f"{key}.pt"
        if file is not None and file.is_file():
            return torch.load(file, weights_only=True)
        sets = self.model.propose_sets(image, **self.options)
        if self.proposal_set not in sets:
            raise KeyError(f"proposal_set {self.proposal_set!r} is not among the model's sets {sorted(sets)}")
        boxes = sets[self.proposal_set]["boxes"].detach().float().cpu()
        if file is not None:
            tmp = file.with_suffix(f".tmp{os.getpid()}")
            torch.save(boxes, tmp)
            os.replace(tmp, file)  # atomic: a killed run leaves no half-written file
        return boxes


class GridProposals(nn.Module):
    """Sliding windows as proposals (no checkpoint, no ground truth): boxes of every size in ``sizes`` and aspect
    ratio (h / w) in ``aspect_ratios``, centred every ``stride`` pixels, clipped to the image, duplicates removed.
    For tests and tiny configs; not the paper's proposals."""

    def __init__(self, *, sizes: Sequence[float] = (16, 32, 64), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 stride: int = 8) -> None:
        super().__init__()
        self.sizes, self.ratios, self.stride = [float(s) for s in sizes], [float(r) for r in aspect_ratios], stride

    def boxes(self, height: int, width: int) -> torch.Tensor:
        ys = torch.arange(self.stride / 2, height, self.stride)
        xs = torch.arange(self.stride / 2, width, self.stride)
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")  # (ny, nx)
        shapes = torch.tensor([(s / r**0.5, s * r**0.5) for s in self.sizes for r in self.ratios])  # (A, 2) w, h
        centres = torch.stack([cx.flatten(), cy.flatten()], dim=1)  # (P, 2)
        half = shapes[None] / 2  # (1, A, 2)
        boxes = torch.cat([centres[:, None] - half, centres[:, None] + half], dim=2).reshape(-1, 4)  # (P A, 4)
        boxes = torchvision.ops.clip_boxes_to_image(boxes, (height, width))
        boxes = boxes[torchvision.ops.remove_small_boxes(boxes, 1.0)]
        return torch.unique(boxes, dim=0)

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.boxes(*im.shape[-2:]).to(im.device) for im in images]


# -- 1. foveal regions -------------------------------------------------------------------------------------------


def foveal_regions(boxes: torch.Tensor, scale: float, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, 4) xyxy boxes -> the boxes with the same centres and ``scale`` times the width and height;
    ``image_size`` (H, W): clipped to [0, W] x [0, H] (None: not clipped; RoI pooling reads zeros outside the map,
    as the reference implementation)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2)
    half = (boxes[:, 2:] - boxes[:, :2]) * (scale / 2)  # (N, 2)
    out = torch.cat([centre - half, centre + half], dim=1)
    if image_size is not None:
        out = torchvision.ops.clip_boxes_to_image(out, tuple(int(v) for v in image_size))
    return out


# -- 2. skip connections -----------------------------------------------------------------------------------------


class RegionPath(nn.Module):
    """One foveal region's RoI features: pooled from the maps at ``strides`` (``channels`` each); several maps ->
    each L2-normalised over (C, S, S), concatenated, times ``norm_scale``, 1 x 1 conv to ``out_channels``.

    ``pool(features, rois)`` -> the raw per-map pooled features [(R, C_i, S, S)];
    ``forward(features, rois)`` -> (R, out_channels, S, S)."""

    def __init__(self, *, featmap_names: Sequence[str], strides: Sequence[int], channels: Sequence[int],
                 out_channels: int, output_size: int = 7, kind: str = "pool", sampling_ratio: int = 2,
                 aligned: bool = True, norm_scale: float = 1000.0) -> None:
        super().__init__()
        self.featmap_names, self.strides = list(featmap_names), [int(s) for s in strides]
        self.ops = nn.ModuleList(level_op(kind, output_size=output_size, spatial_scale=1.0 / s,
                                          sampling_ratio=sampling_ratio, aligned=aligned) for s in self.strides)
        self.norm_scale = norm_scale
        self.mix = (nn.Conv2d(sum(channels), out_channels, 1) if len(self.strides) > 1 else None)
        if self.mix is None and channels[0] != out_channels:
            raise ValueError(f"a single-map region gives {channels[0]} channels, not {out_channels}")
        self.out_channels = out_channels

    def pool(self, features: dict[str, torch.Tensor], rois: torch.Tensor) -> list[torch.Tensor]:
        return [op(features[n], rois) for n, op in zip(self.featmap_names, self.ops)]

    def forward(self, features: dict[str, torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(features, rois)
        if self.mix is None:
            return pooled[0]  # (R, C, S, S): Fast R-CNN
        normed = [F.normalize(p.flatten(1), dim=1).view_as(p) for p in pooled]  # each RoI's (C, S, S) unit norm
        return self.mix(torch.cat(normed, dim=1) * self.norm_scale)  # (R, sum C_i, S, S) -> (R, C_out, S, S)


class FovealSkipPooler(nn.Module):
    """The pooler of the MultiPath network: for every foveal region (``region_scales``), the proposals enlarged
    about their centres (clipped to the image when ``clip_regions``) and pooled by that region's
    :class:`RegionPath` (``region_strides``: the strides it pools from). Called as torchvision's RoIHeads calls
    its pooler: ``(features, proposals [(N_i, 4)], image_sizes [(H_i, W_i)]) -> [(sum N_i, C, S, S)] per region``.
    """

    def __init__(self, *, featmap_names: Sequence[str], strides: Sequence[int], channels: Sequence[int],
                 region_scales: Sequence[float], region_strides: Sequence[Sequence[int]], output_size: int = 7,
                 kind: str = "pool", sampling_ratio: int = 2, aligned: bool = True, clip_regions: bool = False,
                 norm_scale: float = 1000.0) -> None:
        super().__init__()
        if len(region_scales) != len(region_strides):
            raise ValueError(f"region_strides needs one list of strides per region: {len(region_scales)} regions "
                             f"{list(region_scales)}, {len(region_strides)} lists")
        by_stride = {int(s): (n, int(c)) for n, s, c in zip(featmap_names, strides, channels)}
        top = max(by_stride)
        self.region_scales, self.clip_regions = [float(s) for s in region_scales], clip_regions
        paths = []
        for scale, wanted in zip(self.region_scales, region_strides):
            missing = [s for s in wanted if int(s) not in by_stride]
            if missing or not wanted:
                raise ValueError(f"region {scale}x pools from strides {list(wanted)}; the backbone returns strides "
                                 f"{sorted(by_stride)} (set the backbone's strides to include them)")
            wanted = sorted(int(s) for s in wanted)[::-1]  # deepest (conv5) first
            paths.append(RegionPath(featmap_names=[by_stride[s][0] for s in wanted], strides=wanted,
                                    channels=[by_stride[s][1] for s in wanted], out_channels=by_stride[top][1],
                                    output_size=output_size, kind=kind, sampling_ratio=sampling_ratio,
                                    aligned=aligned, norm_scale=norm_scale))
        self.paths = nn.ModuleList(paths)
        self.out_channels, self.output_size = by_stride[top][1], output_size

    def regions(self, proposals: list[torch.Tensor], image_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """(R, 5) RoIs (batch index, x0, y0, x1, y1) of every region."""
        out = []
        for scale in self.region_scales:
            rois = [torch.cat([torch.full_like(b[:, :1], i),
                               foveal_regions(b, scale, size if self.clip_regions else None)], dim=1)
                    for i, (b, size) in enumerate(zip(proposals, image_sizes))]
            out.append(torch.cat(rois))  # (R, 5)
        return out

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        return [path(features, rois) for path, rois in zip(self.paths, self.regions(proposals, image_sizes))]


class MultiPathHead(nn.Module):
    """Per region its own fc6 / fc7 (:class:`~lit_papers.detection.box_heads.FCHead`); outputs concatenated:
    [(R, C, S, S)] * n -> (R, n dim)."""

    def __init__(self, *, num_regions: int, in_features: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = nn.ModuleList(FCHead(in_features=in_features, dim=dim, dropout=dropout)
                                   for _ in range(num_regions))
        self.out_features = num_regions * dim

    def forward(self, pooled: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([head(x) for head, x in zip(self.heads, pooled)], dim=1)  # (R, n dim)


# -- 3. integral loss --------------------------------------------------------------------------------------------


class IntegralPredictor(nn.Module):
    """``num_thresholds`` classifiers (K + 1 logits each) and one class-specific box regressor on the same
    features. Training: (logits (R, n, K + 1), deltas (R, 4 (K + 1))); eval: the log of the classifiers' mean
    softmax (R, K + 1) (a softmax of it gives the mean probabilities back, which the Fast R-CNN post-processing
    applies), deltas. Init as Fast R-CNN: classifier weights N(0, 0.01), regressor N(0, 0.001), biases 0."""

    def __init__(self, *, in_features: int, num_classes: int, num_thresholds: int = 1) -> None:
        super().__init__()
        self.cls = nn.ModuleList(nn.Linear(in_features, num_classes + 1) for _ in range(num_thresholds))
        self.bbox_pred = nn.Linear(in_features, 4 * (num_classes + 1))
        for layer in self.cls:
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.stack([c(x) for c in self.cls], dim=1)  # (R, n, K + 1)
        deltas = self.bbox_pred(x)
        if self.training:
            return logits, deltas
        return logits.float().softmax(dim=-1).mean(dim=1).log(), deltas  # (R, K + 1)


def threshold_labels(labels: torch.Tensor, ious: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """Labels at each threshold u: the class where IoU >= u, else background (0). (R,), (R,) -> (n, R)."""
    u = torch.tensor([float(t) for t in thresholds], device=ious.device, dtype=ious.dtype)
    return torch.where(ious[None] >= u[:, None] - 1e-6, labels[None], torch.zeros_like(labels)[None])


def matched_ious(proposals: list[torch.Tensor], matched_idxs: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
    """IoU of every sampled RoI with the ground-truth box it was matched to (0 for an image without boxes)."""
    out = []
    for boxes, idx, target in zip(proposals, matched_idxs, targets):
        gt = target["boxes"]
        if len(gt) == 0:
            out.append(boxes.new_zeros(len(boxes)))
            continue
        out.append(torchvision.ops.box_iou(boxes, gt)[torch.arange(len(boxes), device=boxes.device), idx])
    return torch.cat(out)


class IntegralLoss:
    """L = 1/n sum_u [L_cls(p_u, k*_u) + [k*_u >= 1] L_loc(t, t*)] (sec. 3.3) with Fast R-CNN's terms
    (``torchvision``'s ``fastrcnn_loss``: softmax cross-entropy over the sampled RoIs, smooth-L1 of the
    ground-truth class's box summed over foreground RoIs / number of RoIs). The sampler's foreground threshold is
    the lowest u; a RoI's label at a higher u is background once its IoU with its matched box is below u.
    Returns ``loss_classifier`` and ``loss_box_reg`` (each the mean over u)."""

    def __init__(self, *, thresholds: Sequence[float] = (0.5,)) -> None:
        self.thresholds = [float(t) for t in thresholds]

    def __call__(self, class_logits, box_regression, labels, regression_targets, proposals, matched_idxs, targets):
        if class_logits.dim() == 2:
            class_logits = class_logits[:, None]  # (R, 1, K + 1)
        if class_logits.shape[1] != len(self.thresholds):
            raise ValueError(f"{class_logits.shape[1]} classifiers for {len(self.thresholds)} IoU thresholds")
        flat = torch.cat(labels)  # (R,)
        per_u = threshold_labels(flat, matched_ious(proposals, matched_idxs, targets).to(class_logits.dtype),
                                 self.thresholds)  # (n, R)
        cls, box = [], []
        for i in range(len(self.thresholds)):
            c, b = fastrcnn_loss(class_logits[:, i], box_regression, [per_u[i]], regression_targets)
            cls.append(c)
            box.append(b)
        return {"loss_classifier": torch.stack(cls).mean(), "loss_box_reg": torch.stack(box).mean()}


# -- the detector ------------------------------------------------------------------------------------------------

PAPER_REGION_SCALES = (1.0, 1.5, 2.0, 4.0)
PAPER_REGION_STRIDES = ((16, 8, 4), (16, 8), (16, 8), (16,))  # conv3 -> 1x; conv4 -> 1x, 1.5x, 2x; conv5 -> all
PAPER_IOU_THRESHOLDS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


class MultiPathNet(TwoStageDetector):
    """Fast R-CNN with the MultiPath changes (module docstring). ``backbone``: under the backbone contract
    (``.strides``, ``.out_channels``, OrderedDict of maps), e.g. ``TimmBackbone`` with strides (4, 8, 16) = VGG-16
    conv3_3 / conv4_3 / conv5_3. ``proposals``: :class:`MaskProposals` or :class:`GridProposals`.

    The ablation switches: ``region_scales`` ([1.0] Fast R-CNN; (1, 1.5, 2, 4) foveal), ``region_strides`` (one
    list per region; [[16]] per region: conv5 only; the paper's skip pattern ``PAPER_REGION_STRIDES``),
    ``iou_thresholds`` ([0.5] Fast R-CNN's loss; (0.50 .. 0.75) the integral loss). ``head_init_from``: a timm
    model whose ImageNet fc6 / fc7 initialise every region's head (``vgg16``; None: random init)."""

    def __init__(self, *, backbone: nn.Module, proposals: nn.Module, num_classes: int = 80,
                 region_scales: Sequence[float] = PAPER_REGION_SCALES,
                 region_strides: Sequence[Sequence[int]] = PAPER_REGION_STRIDES,
                 iou_thresholds: Sequence[float] = PAPER_IOU_THRESHOLDS, clip_regions: bool = False,
                 pooler: str = "pool", pool_size: int = 7, sampling_ratio: int = 2, aligned: bool = True,
                 skip_norm_scale: float = 1000.0, head_dim: int = 4096, head_dropout: float = 0.5,
                 head_init_from: str | None = None,
                 roi_batch_size_per_image: int = 64, roi_positive_fraction: float = 0.25,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 size_divisible: int = 16) -> None:
        if sorted(float(t) for t in iou_thresholds) != [float(t) for t in iou_thresholds] or not iou_thresholds:
            raise ValueError(f"iou_thresholds must be increasing, got {list(iou_thresholds)}")
        names = list(getattr(backbone, "names", None) or [f"m{i}" for i in range(len(backbone.strides))])
        pool = FovealSkipPooler(featmap_names=names, strides=backbone.strides, channels=backbone.out_channels,
                                region_scales=region_scales, region_strides=region_strides, output_size=pool_size,
                                kind=pooler, sampling_ratio=sampling_ratio, aligned=aligned,
                                clip_regions=clip_regions, norm_scale=skip_norm_scale)
        head = MultiPathHead(num_regions=len(region_scales), in_features=pool.out_channels * pool_size**2,
                             dim=head_dim, dropout=head_dropout)
        if head_init_from is not None:  # every region's fc6 / fc7 from the ImageNet classifier (Fast R-CNN sec. 2.2)
            mlp = timm_classifier_mlp(head_init_from, pretrained=True)
            for region_head in head.heads:
                fc_head_from_classifier(region_head, mlp)
        roi_heads = RoIHeads(box_pooler=pool, box_head=head,
                             box_predictor=IntegralPredictor(in_features=head.out_features, num_classes=num_classes,
                                                             num_thresholds=len(iou_thresholds)),
                             box_loss=IntegralLoss(thresholds=iou_thresholds),
                             fg_iou_thresh=float(iou_thresholds[0]), bg_iou_thresh=float(iou_thresholds[0]),
                             batch_size_per_image=roi_batch_size_per_image,
                             positive_fraction=roi_positive_fraction, score_thresh=score_thresh,
                             nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        super().__init__(features=backbone, rpn=None, roi_heads=roi_heads, size_divisible=size_divisible)
        self.proposals = proposals
        self.num_classes = num_classes
        self.feature_names = names

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None,
                original_sizes: list[tuple[int, int]] | None = None):
        batch, sizes = self.batch_images(images)
        maps = self.features(batch)
        features = dict(zip(self.feature_names, maps.values())) if isinstance(maps, dict) else maps
        proposals = [p.to(batch.dtype) for p in self.proposals(images)]  # (N_i, 4) in the input's pixels
        detections, losses = self.roi_heads(features, proposals, sizes, targets)
        if self.training:
            return {k: v.float() for k, v in losses.items()}
        return self.postprocess(detections, sizes, sizes if original_sizes is None else original_sizes)
