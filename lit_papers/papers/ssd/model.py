"""SSD: Single Shot MultiBox Detector (Liu, Anguelov, Erhan, Szegedy, Reed, Fu, Berg; ECCV 2016).

Reads top to bottom like sec. 2 of the paper:

1. the base network (sec. 3 "Base network"): VGG-16 through conv5_3, pool5 changed from 2x2 s2 to 3x3 s1, fc6 / fc7
   turned into convolutions with the parameters subsampled (fc6: 3x3, 1024 channels, atrous / dilation 6;
   fc7: 1x1, 1024 channels); conv4_3 (stride 8) and fc7 (stride 16) are the first two detection maps, conv4_3
   L2-normalised with a learned per-channel scale initialised to 20 (sec. 3.1, ParseNet);
2. extra feature layers (sec. 2.1 "Multi-scale feature maps", Fig. 2): pairs of 1x1 reduce + 3x3 convolutions
   (conv8_2 .. conv11_2 of SSD300: 10x10, 5x5, 3x3, 1x1), each a further detection map;
3. convolutional predictors (sec. 2.1): one 3x3 convolution per map giving, for each of the A_k default boxes
   of a location, 4 box offsets and K+1 class scores ("(c + 4) k filters");
4. default boxes (sec. 2.2, :mod:`lit_papers.ops.default_boxes`), matching and the multibox loss with hard negative
   mining (:mod:`lit_papers.ops.multibox`);
5. inference (sec. 3 "Inference time" / 3.7): softmax scores, decode, per class drop scores < 0.01, NMS at IoU 0.45,
   keep the top 200 detections per image.

Input: a list of images (3, H_i, W_i) float in [0, 1]; each is warped to ``input_size`` x ``input_size`` (SSD300:
300; training targets scaled with it), normalised with ``mean`` / ``std`` (ImageNet statistics of the timm VGG-16;
the Caffe model subtracts the BGR mean only). Targets as torchvision's: ``boxes`` (N, 4) xyxy pixels, ``labels``
(N,) int64 in 1..K. Output: training -> {"loss_classifier", "loss_box_reg"} (+ counts under ``self.last_counts``);
eval -> per image {boxes (xyxy, in ``original_sizes`` pixels when given), scores, labels}.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, clip_boxes_to_image

from lit_papers.ops.default_boxes import boxes_per_location, default_boxes
from lit_papers.ops.multibox import (
    SSD_BOX_WEIGHTS,
    box_coder,
    encode_targets,
    match_default_boxes,
    multibox_loss,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG16_STAGES = (2, 2, 3, 3, 3)
# SSD300's extra layers (Fig. 2; the released prototxt): (1x1 channels, 3x3 channels, 3x3 stride, 3x3 padding)
SSD300_EXTRAS = ((256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0))
SSD300_RATIOS = ((2.0,), (2.0, 3.0), (2.0, 3.0), (2.0, 3.0), (2.0,), (2.0,))  # sec. 3.1: 4 or 6 boxes per location
SSD300_VOC_SCALES = (0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05)  # ops.default_boxes.ssd_scales(6, first_scale=0.1, ...)


class L2Norm(nn.Module):
    """Per-location L2 normalisation over channels times a learned per-channel scale (ParseNet; sec. 3.1:
    conv4_3's feature scale differs from the later layers', initial scale 20)."""

    def __init__(self, *, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt().clamp(min=self.eps)  # (B, 1, H, W)
        return x / norm * self.weight.view(1, -1, 1, 1)


def _convs(cin: int, cout: int, n: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [nn.Conv2d(cin, cout, 3, padding=1)] + ([nn.BatchNorm2d(cout)] if batch_norm else [])
        layers.append(nn.ReLU(inplace=True))
        cin = cout
    return layers


class SSDVGG(nn.Module):
    """The base network: VGG conv1..conv5 (``widths`` scale it), pool5 3x3 s1, atrous fc6 (3x3, dilation
    ``fc6_dilation``) and fc7 (1x1) of ``fc_channels``. ``forward -> [conv4_3 (stride 8), fc7 (stride 16)]``.
    Pools use ceil mode (Caffe's; 75 -> 38 at pool3 of a 300-pixel input). ``batch_norm`` adds BN after every
    convolution (for training from scratch on CPU; the paper fine-tunes the ImageNet VGG-16)."""

    def __init__(self, *, widths: Sequence[int] = (64, 128, 256, 512, 512), fc_channels: int = 1024,
                 fc6_dilation: int = 6, batch_norm: bool = False) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"SSDVGG needs five stage widths (VGG-16 has 64, 128, 256, 512, 512), got {widths}")
        pool = lambda: nn.MaxPool2d(2, 2, ceil_mode=True)  # noqa: E731
        w1, w2, w3, w4, w5 = widths
        self.to_conv4_3 = nn.Sequential(*_convs(3, w1, 2, batch_norm), pool(), *_convs(w1, w2, 2, batch_norm), pool(),
                                        *_convs(w2, w3, 3, batch_norm), pool(), *_convs(w3, w4, 3, batch_norm))
        fc = [nn.Conv2d(w5, fc_channels, 3, padding=fc6_dilation, dilation=fc6_dilation)]  # fc6, atrous
        fc += [nn.BatchNorm2d(fc_channels)] if batch_norm else []
        fc += [nn.ReLU(inplace=True), nn.Conv2d(fc_channels, fc_channels, 1)]  # fc7
        fc += [nn.BatchNorm2d(fc_channels)] if batch_norm else []
        self.to_fc7 = nn.Sequential(pool(), *_convs(w4, w5, 3, batch_norm), nn.MaxPool2d(3, 1, padding=1),  # pool5
                                    *fc, nn.ReLU(inplace=True))
        self.out_channels = [w4, fc_channels]
        self.strides = [8, 16]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        conv4_3 = self.to_conv4_3(x)  # (B, w4, ceil(H/8), ceil(W/8))
        return [conv4_3, self.to_fc7(conv4_3)]  # + (B, fc, ceil(H/16), ceil(W/16))

    def load_imagenet_vgg16(self, name: str = "vgg16", *, pretrained: bool = True) -> None:
        """conv1_1..conv5_3 <- timm's ImageNet VGG-16; fc6 / fc7 <- its fc layers subsampled (sec. 3: "subsample
        parameters from fc6 and fc7"): fc6 (4096, 512, 7, 7) -> every 4th filter and every 3rd tap (rows / columns
        0, 3, 6: the 7x7 kernel seen with holes is a dilated 3x3); fc7 (4096, 4096) -> every 4th in and out."""
        import timm

        vgg = timm.create_model(name, pretrained=pretrained)
        theirs = [m for m in vgg.features if isinstance(m, nn.Conv2d)]
        mine = [m for m in self.modules() if isinstance(m, nn.Conv2d)]
        if len(theirs) != 13 or len(mine) != 15 or any(a.weight.shape != b.weight.shape for a, b in zip(mine, theirs)):
            raise ValueError("load_imagenet_vgg16 needs the full VGG-16 widths (64, 128, 256, 512, 512) without BN")
        fc6, fc7 = mine[13], mine[14]
        with torch.no_grad():
            for a, b in zip(mine, theirs):
                a.weight.copy_(b.weight)
                a.bias.copy_(b.bias)
            w6, b6 = vgg.pre_logits.fc1.weight, vgg.pre_logits.fc1.bias  # (4096, 512, 7, 7)
            fc6.weight.copy_(w6[::4, :, ::3, ::3])
            fc6.bias.copy_(b6[::4])
            w7, b7 = vgg.pre_logits.fc2.weight, vgg.pre_logits.fc2.bias  # (4096, 4096, 1, 1)
            fc7.weight.copy_(w7[::4, ::4])
            fc7.bias.copy_(b7[::4])


class ExtraLayers(nn.Module):
    """Sec. 2.1: after fc7, blocks of [1x1 conv ``mid``, ReLU, 3x3 conv ``out`` (stride, padding), ReLU], each output
    a detection map. ``blocks``: (mid, out, stride, padding) per block (SSD300: :data:`SSD300_EXTRAS`)."""

    def __init__(self, *, in_channels: int, blocks: Sequence[Sequence[int]], batch_norm: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.out_channels = []
        for mid, out, stride, padding in blocks:
            layers: list[nn.Module] = [nn.Conv2d(in_channels, mid, 1)] + ([nn.BatchNorm2d(mid)] if batch_norm else [])
            layers += [nn.ReLU(inplace=True), nn.Conv2d(mid, out, 3, stride=stride, padding=padding)]
            layers += ([nn.BatchNorm2d(out)] if batch_norm else []) + [nn.ReLU(inplace=True)]
            self.blocks.append(nn.Sequential(*layers))
            self.out_channels.append(out)
            in_channels = out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps


class SSD(nn.Module):
    """SSD on :class:`SSDVGG` + :class:`ExtraLayers`. ``num_classes`` counts foreground classes (the softmax has
    ``num_classes + 1`` outputs, 0 = background). Defaults: SSD300 on VOC (sec. 3.1)."""

    iou_types: tuple[str, ...] = ("bbox",)

    def __init__(self, *, num_classes: int = 20, input_size: int = 300,
                 widths: Sequence[int] = (64, 128, 256, 512, 512), fc_channels: int = 1024, batch_norm: bool = False,
                 extras: Sequence[Sequence[int]] = SSD300_EXTRAS, l2norm_scale: float = 20.0,
                 scales: Sequence[float] = SSD300_VOC_SCALES, aspect_ratios: Sequence[Sequence[float]] = SSD300_RATIOS,
                 steps: Sequence[int] | None = None, clip_priors: bool = False, match_threshold: float = 0.5,
                 neg_pos_ratio: float | None = 3.0, alpha: float = 1.0,
                 box_weights: Sequence[float] = SSD_BOX_WEIGHTS, score_thresh: float = 0.01, nms_thresh: float = 0.45,
                 pre_nms_top_k: int = 400, detections_per_image: int = 200,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 imagenet_vgg16: bool = False) -> None:
        super().__init__()
        num_maps = 2 + len(extras)
        if len(aspect_ratios) != num_maps or len(scales) != num_maps + 1:
            raise ValueError(f"{num_maps} detection maps (conv4_3, fc7 and {len(extras)} extras) need {num_maps} "
                             f"aspect-ratio lists and {num_maps + 1} scales; got {len(aspect_ratios)} and {len(scales)}")
        self.num_classes, self.input_size = num_classes, input_size
        self.base = SSDVGG(widths=widths, fc_channels=fc_channels, batch_norm=batch_norm)
        if imagenet_vgg16:
            self.base.load_imagenet_vgg16()
        self.l2norm = L2Norm(channels=self.base.out_channels[0], scale=l2norm_scale)
        self.extras = ExtraLayers(in_channels=fc_channels, blocks=extras, batch_norm=batch_norm)
        channels = self.base.out_channels + self.extras.out_channels
        anchors = boxes_per_location(aspect_ratios)
        self.loc_heads = nn.ModuleList(nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(channels, anchors))
        self.cls_heads = nn.ModuleList(nn.Conv2d(c, a * (num_classes + 1), 3, padding=1)
                                       for c, a in zip(channels, anchors))
        for m in [*self.extras.modules(), *self.loc_heads, *self.cls_heads]:  # sec. 3: new layers "xavier"
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.prior_config = {"scales": list(scales), "aspect_ratios": [list(r) for r in aspect_ratios],
                             "steps": None if steps is None else list(steps), "clip": clip_priors}
        self.box_coder = box_coder(box_weights)
        self.match_threshold, self.neg_pos_ratio, self.alpha = match_threshold, neg_pos_ratio, alpha
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.pre_nms_top_k, self.detections_per_image = pre_nms_top_k, detections_per_image
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.last_counts: dict[str, torch.Tensor] = {}

    # -- the network -------------------------------------------------------------------------------------------
    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) normalised -> the detection maps, finest first."""
        conv4_3, fc7 = self.base(x)
        return [self.l2norm(conv4_3), fc7, *self.extras(fc7)]

    def head_outputs(self, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> class logits (B, P, K+1) and box offsets (B, P, 4), P ordered as the default boxes (map, y, x, box)."""
        logits, offsets = [], []
        for x, cls_head, loc_head in zip(maps, self.cls_heads, self.loc_heads):
            b, _, h, w = x.shape
            logits.append(cls_head(x).view(b, -1, self.num_classes + 1, h, w).permute(0, 3, 4, 1, 2)
                          .reshape(b, -1, self.num_classes + 1))  # (B, A, C, H, W) -> (B, H, W, A, C) -> (B, HWA, C)
            offsets.append(loc_head(x).view(b, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4))  # (B, HWA, 4)
        return torch.cat(logits, dim=1), torch.cat(offsets, dim=1)

    def priors(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """(P, 4) default boxes, xyxy pixels of the ``input_size`` square (sec. 2.2)."""
        s = self.input_size
        return default_boxes([tuple(m.shape[-2:]) for m in maps], (s, s), **self.prior_config,
                             dtype=maps[0].dtype).to(maps[0].device)

    def batch_images(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Warp each image to S x S (bilinear; skipped when already S x S) and normalise -> (B, 3, S, S), sizes."""
        s = self.input_size
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        batch = torch.stack([im if im.shape[-2:] == (s, s) else
                             F.interpolate(im[None], size=(s, s), mode="bilinear", align_corners=False)[0]
                             for im in images])  # (B, 3, S, S)
        return (batch - self.pixel_mean) / self.pixel_std, sizes

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None,
                original_sizes: list[tuple[int, int]] | None = None):
        batch, sizes = self.batch_images(images)
        maps = self.feature_maps(batch)
        cls_logits, box_regression = self.head_outputs(maps)
        priors = self.priors(maps)
        if self.training:
            if targets is None:
                raise ValueError("SSD in training mode needs targets (boxes, labels per image)")
            return self.loss(cls_logits, box_regression, priors, targets, sizes)
        return self.postprocess(cls_logits, box_regression, priors, sizes if original_sizes is None else original_sizes)

    # -- training (sec. 2.2) -----------------------------------------------------------------------------------
    def loss(self, cls_logits: torch.Tensor, box_regression: torch.Tensor, priors: torch.Tensor,
             targets: list[dict], sizes: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        s = self.input_size
        box_targets, cls_targets = [], []
        for target, (h, w) in zip(targets, sizes):
            boxes = target["boxes"].to(priors) * priors.new_tensor([s / w, s / h, s / w, s / h])  # input pixels
            matches = match_default_boxes(boxes, priors, threshold=self.match_threshold)
            offsets, labels = encode_targets(boxes, target["labels"].to(priors.device), priors, matches,
                                             self.box_coder)
            box_targets.append(offsets)
            cls_targets.append(labels)
        out = multibox_loss(cls_logits, box_regression, torch.stack(cls_targets), torch.stack(box_targets),
                            neg_pos_ratio=self.neg_pos_ratio, alpha=self.alpha)
        self.last_counts = {k: out.pop(k) for k in ("num_positive", "num_negative")}
        return out

    # -- inference ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def postprocess(self, cls_logits: torch.Tensor, box_regression: torch.Tensor, priors: torch.Tensor,
                    original_sizes: Sequence[tuple[int, int]]) -> list[dict]:
        """Per image: decode, per class keep scores > ``score_thresh`` (top ``pre_nms_top_k``), NMS at
        ``nms_thresh`` per class, the best ``detections_per_image``; boxes clipped to the input, then scaled to
        the original image (x * W0 / S, y * H0 / S)."""
        s = self.input_size
        scores_all = F.softmax(cls_logits.float(), dim=-1)  # (B, P, K+1)
        out = []
        for scores, offsets, (h0, w0) in zip(scores_all, box_regression.float(), original_sizes):
            boxes = clip_boxes_to_image(self.box_coder.decode_single(offsets, priors.float()), (s, s))  # (P, 4)
            keep_boxes, keep_scores, keep_labels = [], [], []
            for c in range(1, self.num_classes + 1):
                sc = scores[:, c]
                idx = torch.nonzero(sc > self.score_thresh).squeeze(1)
                idx = idx[sc[idx].topk(min(self.pre_nms_top_k, idx.numel())).indices]
                keep_boxes.append(boxes[idx])
                keep_scores.append(sc[idx])
                keep_labels.append(torch.full_like(idx, c))
            b, sc, lab = torch.cat(keep_boxes), torch.cat(keep_scores), torch.cat(keep_labels)
            keep = batched_nms(b, sc, lab, self.nms_thresh)[: self.detections_per_image]  # sorted by score
            ratio = b.new_tensor([w0 / s, h0 / s, w0 / s, h0 / s])
            out.append({"boxes": b[keep] * ratio, "scores": sc[keep], "labels": lab[keep]})
        return out


def load_torchvision_ssd300(model: SSD, tv_model: nn.Module) -> None:
    """Copy the weights of torchvision's ``ssd300_vgg16`` (same architecture: VGG-16 to conv4_3, pool5 / atrous
    fc6 / fc7, the four extra blocks, L2Norm scale, 3x3 heads in the same (location, box, class) layout) into an SSD
    built with the full widths and ``num_classes = tv num_classes - 1``. Used by the parity test and the benchmark;
    also loads torchvision's COCO weights. Raises ValueError when the two do not have the same conv layers."""
    def convs(m: nn.Module) -> list[nn.Conv2d]:
        return [c for c in m.modules() if isinstance(c, nn.Conv2d)]

    pairs = list(zip(convs(model.base) + convs(model.extras), convs(tv_model.backbone)))
    pairs += list(zip([*model.cls_heads, *model.loc_heads], [*tv_model.head.classification_head.module_list,
                                                              *tv_model.head.regression_head.module_list]))
    if len(pairs) != 35 or any(a.weight.shape != b.weight.shape for a, b in pairs):
        raise ValueError("load_torchvision_ssd300 needs SSD300 with full widths, no BN, and num_classes = "
                         "torchvision's num_classes - 1")
    with torch.no_grad():
        for a, b in pairs:
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
        model.l2norm.weight.copy_(tv_model.backbone.scale_weight)
