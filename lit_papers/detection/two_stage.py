"""A two-stage detector (Faster R-CNN family): features -> RPN proposals -> RoI heads.

Input: a list of images float (3, H_i, W_i) in [0, 1] (already resized by the datamodule); the detector
normalises with ``pixel_mean``/``pixel_std`` (ImageNet statistics, as for the timm backbones) and pads the batch
to a multiple of ``size_divisible`` (32 for FPN: P5 must tile the image). Targets as torchvision's: dicts with
``boxes`` (N, 4) xyxy float, ``labels`` (N,) int64 in 1..K, ``masks`` (N, H, W) uint8 for Mask R-CNN.
Output: training -> dict of losses (float32); eval -> one dict per image with ``boxes`` (xyxy, in the pixels of
``original_sizes`` when given, else of the input image), ``labels``, ``scores`` [+ Mask R-CNN's ``mask_probs``
(N, 1, M, M) and ``masks`` (N, H0, W0) uint8, pasted by its ``postprocess``]. ``iou_types`` says what the
outputs can be evaluated as (``("bbox",)`` here; Mask R-CNN adds ``"segm"``).

The RPN is torchvision's ``RegionProposalNetwork`` (Ren et al. 2015, sec. 3.1: 3x3 conv + sibling 1x1
objectness/box convs, anchors of several scales and aspect ratios, IoU >= 0.7 positive / < 0.3 negative,
256 anchors per image at up to 1:1, NMS 0.7), with our explicit anchor configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from lit_papers.backbones.timm_backbone import TimmBackbone
from lit_papers.layers.fpn import FPN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_rpn(*, in_channels: int, anchor_sizes: Sequence[Sequence[int]], aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
              fg_iou_thresh: float = 0.7, bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256,
              positive_fraction: float = 0.5, pre_nms_top_n_train: int = 2000, pre_nms_top_n_test: int = 1000,
              post_nms_top_n_train: int = 2000, post_nms_top_n_test: int = 1000, nms_thresh: float = 0.7
              ) -> RegionProposalNetwork:
    """``anchor_sizes``: one tuple of sizes (pixels) per feature map the RPN sees, e.g. FPN ((32,), (64,), (128,),
    (256,), (512,)) on P2..P6 (Lin et al. 2017, sec. 4.1) or C4 ((32, 64, 128, 256, 512),)."""
    sizes = tuple(tuple(int(s) for s in level) for level in anchor_sizes)
    ratios = (tuple(float(r) for r in aspect_ratios),) * len(sizes)
    anchors = AnchorGenerator(sizes, ratios)
    head = RPNHead(in_channels, anchors.num_anchors_per_location()[0])
    return RegionProposalNetwork(
        anchors, head, fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction,
        {"training": pre_nms_top_n_train, "testing": pre_nms_top_n_test},
        {"training": post_nms_top_n_train, "testing": post_nms_top_n_test}, nms_thresh)


class TwoStageDetector(nn.Module):
    """``features``: backbone (+ neck) under the backbone contract; ``rpn``; ``roi_heads`` (detection.RoIHeads)."""

    def __init__(self, *, features: nn.Module, rpn: RegionProposalNetwork, roi_heads: nn.Module,
                 pixel_mean: Sequence[float] = IMAGENET_MEAN, pixel_std: Sequence[float] = IMAGENET_STD,
                 size_divisible: int = 32, channels_last: bool = True) -> None:
        super().__init__()
        # channels_last (NHWC) backbone + neck: oneDNN's (CPU) and cuDNN's (GPU, AMP) fast convolution layout; the
        # same function (float rounding only), ~9% less backbone time in inference and ~5% in training on CPU
        self.channels_last = channels_last
        if channels_last:
            features = features.to(memory_format=torch.channels_last)
        self.features = features
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.size_divisible = size_divisible
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)

    def batch_images(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise and zero-pad (bottom/right) to a common size divisible by ``size_divisible``.
        Returns (B, 3, H, W) and the unpadded sizes [(H_i, W_i)]."""
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        d = self.size_divisible
        h = -(-max(s[0] for s in sizes) // d) * d
        w = -(-max(s[1] for s in sizes) // d) * d
        batch = torch.stack([F.pad((im - self.pixel_mean) / self.pixel_std, (0, w - im.shape[-1], 0, h - im.shape[-2]))
                             for im in images])  # (B, 3, H, W)
        return batch, sizes

    iou_types: tuple[str, ...] = ("bbox",)

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None,
                original_sizes: list[tuple[int, int]] | None = None):
        """``original_sizes``: (H0, W0) of each image before the datamodule resized it; eval outputs are mapped
        there (default: the input sizes, i.e. no rescaling)."""
        batch, sizes = self.batch_images(images)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        features = self.features(batch)
        proposals, rpn_losses = self.rpn(ImageList(batch, sizes), features, targets)
        detections, roi_losses = self.roi_heads(features, proposals, sizes, targets)
        if self.training:
            return {k: v.float() for k, v in {**rpn_losses, **roi_losses}.items()}
        return self.postprocess(detections, sizes, sizes if original_sizes is None else original_sizes)

    def postprocess(self, detections: list[dict], image_sizes: list[tuple[int, int]],
                    original_sizes: list[tuple[int, int]]) -> list[dict]:
        """Boxes from the network's input pixels (H, W) to the original image's (H0, W0): x * W0 / W, y * H0 / H."""
        for det, (h, w), (h0, w0) in zip(detections, image_sizes, original_sizes):
            ratio = det["boxes"].new_tensor([w0 / w, h0 / h, w0 / w, h0 / h])
            det["boxes"] = det["boxes"] * ratio  # (N, 4) original pixels
        return detections


SINGLE_MAP_STRIDE = 16  # Fast/Faster R-CNN's conv5_3 (VGG-16) or C4 (ResNet): the one map of a detector without FPN
FPN_STRIDES = (4, 8, 16, 32)  # C2..C5 -> P2..P5 (Lin et al. 2017, sec. 3); P6 = subsampled P5, for the RPN only


def build_features(*, backbone: str, fpn: bool, fpn_channels: int = 256, feature_stride: int = SINGLE_MAP_STRIDE,
                   pretrained: bool = False, checkpoint_path: str | None = None, freeze_bn: bool = False,
                   freeze_at: int = 0) -> tuple[nn.Module, list[str], list[int]]:
    """Backbone (+ FPN) and the maps the RoI heads pool from, chosen by stride (never by timm index):
    FPN -> the backbone's stride 4..32 maps into P2..P6, RoIs from P2..P5; no FPN -> the single map at
    ``feature_stride`` (16: VGG-16 conv5_3, ResNet C4; 32: ResNet C5, Mask R-CNN Table 2d). A backbone without
    such a map is a ValueError naming its strides."""
    strides = FPN_STRIDES if fpn else (feature_stride,)
    body = TimmBackbone(name=backbone, strides=strides, pretrained=pretrained, checkpoint_path=checkpoint_path,
                        freeze_bn=freeze_bn, freeze_at=freeze_at)
    if not fpn:
        return body, list(body.names), list(body.strides)
    neck = FPN(body=body, out_channels=fpn_channels, p6=True)
    return neck, neck.names[:-1], neck.strides[:-1]
