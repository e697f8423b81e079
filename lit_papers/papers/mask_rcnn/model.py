"""Mask R-CNN (He, Gkioxari, Dollár, Girshick, ICCV 2017): Faster R-CNN + a mask branch.

Sec. 3 of the paper, top to bottom:

* Backbone + FPN (timm ``features_only`` + :class:`lit_papers.layers.fpn.FPN`), RPN and the box branch are the
  Faster R-CNN of :mod:`lit_papers.detection` (composed, not copied).
* **RoIAlign** (sec. 3, "RoIAlign"): bilinear sampling at 4 regular points per bin (``sampling_ratio=2``)
  without quantisation; ``mask_pooler="pool"`` switches to RoIPool for the Table 2c ablation.
* **Mask head** (Fig. 4 right, FPN): 14x14 RoI features -> four 3x3 conv 256 + ReLU -> 2x2 deconv stride 2 +
  ReLU -> 28x28 -> 1x1 conv to K masks (one per class, ``class_agnostic=False``) or 1 (Table 2b ablation).
  **C4** (Fig. 4 left, ``box_head="res5"``): RoIs pooled 14x14 from C4 go through the res5 stage (stride 2 in
  its first block -> 7x7x2048); the box head is res5 + average pooling and the mask head branches from the same
  res5 (shared weights): 2x2 deconv stride 2 to 14x14x256 + ReLU -> 1x1 conv to 14x14 masks (no 3x3 convs,
  ``mask_head_convs: 0``).
* **Mask loss** (sec. 3, "Mask Representation" + Table 2b): per-pixel sigmoid + binary cross-entropy on the
  ground-truth class's mask only (``mask_loss="sigmoid"``), so classes do not compete; ``"softmax"`` is the
  ablation's multinomial per-pixel loss over classes (background channel 0 = outside the object).
  Targets: the ground-truth mask cropped to the RoI and resampled to 28x28 (torchvision's
  ``project_masks_on_boxes``), binarised at 0.5 for the softmax variant.
* Inference (sec. 3.1): the mask branch runs on the top-100 post-NMS detections; the k-th mask (k = predicted
  class) is taken, sigmoid (or the softmax probability of k); ``MaskRCNN.postprocess`` resizes it into the box
  in the original image (torchvision's ``paste_masks_in_image``) and binarises it at ``mask_threshold`` 0.5.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import project_masks_on_boxes
from torchvision.models.detection.transform import paste_masks_in_image

from lit_papers.detection.poolers import RoIPooler
from lit_papers.detection.rcnn import RCNN


class MaskHead(nn.Module):
    """(R, C, 14, 14) -> (R, num_masks, 28, 28) logits: ``num_convs`` 3x3 convs, a 2x2 stride-2 deconv, a 1x1 conv."""

    def __init__(self, *, in_channels: int, num_masks: int, num_convs: int = 4, dim: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else dim, dim, 3, padding=1), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(dim if num_convs else in_channels, dim, 2, stride=2)
        self.predictor = nn.Conv2d(dim, num_masks, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def layers(self) -> list:
        # ReLU in place: the deconv output (P, 256, 28, 28), the largest tensor of the head, is not kept twice
        return [*self.convs, self.deconv, partial(F.relu, inplace=True), self.predictor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers():
            x = layer(x)
        return x


def head_layers(head: nn.Module) -> list:
    """A head as the flat list of its layers (``MaskHead.layers()``, ``nn.Sequential`` children, recursively), so
    that inference can run it layer by layer and free each input as soon as the next layer has it (a module call
    keeps its input alive until it returns: the pooled RoI features would stay in memory during the deconv)."""
    if hasattr(head, "layers"):
        return head.layers()
    if isinstance(head, nn.Sequential):
        return [layer for child in head for layer in head_layers(child)]
    return [head]


class MaskBranch(nn.Module):
    """RoI pooling + mask head + the paper's mask loss and inference (see the module docstring)."""

    def __init__(self, *, pooler: RoIPooler, head: nn.Module, mask_size: int = 28, class_agnostic: bool = False,
                 loss: str = "sigmoid") -> None:
        """``head``: (R, C, S, S) pooled features -> (R, K', mask_size, mask_size) logits."""
        super().__init__()
        self.mask_size = mask_size
        if loss not in ("sigmoid", "softmax"):
            raise ValueError(f"mask loss must be 'sigmoid' or 'softmax', got {loss!r}")
        if loss == "softmax" and class_agnostic:
            raise ValueError("a softmax over classes needs class-specific masks")
        self.pooler, self.head = pooler, head
        self.class_agnostic, self.loss_type = class_agnostic, loss

    def loss(self, features, proposals, labels, matched_idxs, targets, image_shapes) -> torch.Tensor:
        positive = [torch.where(lab > 0)[0] for lab in labels]
        rois = [p[i] for p, i in zip(proposals, positive)]
        if sum(len(r) for r in rois) == 0:  # no foreground RoI in the batch: a zero that keeps the graph
            return sum(p.sum() for p in self.head.parameters()) * 0.0
        logits = self.head(self.pooler(features, rois, image_shapes)).float()  # (P, K', M, M)
        size = logits.shape[-1]
        mask_targets = torch.cat([project_masks_on_boxes(t["masks"], r, m[i], size)
                                  for t, r, m, i in zip(targets, rois, matched_idxs, positive)])  # (P, M, M)
        gt_labels = torch.cat([lab[i] for lab, i in zip(labels, positive)])  # (P,)
        if self.loss_type == "softmax":  # multinomial over classes; pixels outside the object -> background 0
            pixel_class = (mask_targets >= 0.5).long() * gt_labels[:, None, None]  # (P, M, M)
            return F.cross_entropy(logits, pixel_class)
        channel = torch.zeros_like(gt_labels) if self.class_agnostic else gt_labels
        chosen = logits[torch.arange(len(gt_labels), device=logits.device), channel]  # (P, M, M)
        return F.binary_cross_entropy_with_logits(chosen, mask_targets)

    def predict(self, features, detections: list[dict], image_shapes) -> list[dict]:
        boxes = [d["boxes"] for d in detections]
        if sum(len(b) for b in boxes) == 0:
            for d in detections:
                d["mask_probs"] = d["boxes"].new_zeros((0, 1, self.mask_size, self.mask_size))
            return detections
        x = self.pooler(features, boxes, image_shapes)  # (N, C, S, S)
        for layer in head_layers(self.head):  # = self.head(x), with each intermediate freed when used
            x = layer(x)
        logits = x.float()  # (N, K', M, M)
        del x
        labels = torch.cat([d["labels"] for d in detections])
        index = torch.arange(len(labels), device=labels.device)
        if self.loss_type == "softmax":
            probs = logits.softmax(dim=1)[index, labels]  # (N, M, M)
        else:
            probs = logits[index, torch.zeros_like(labels) if self.class_agnostic else labels].sigmoid()
        for d, p in zip(detections, probs[:, None].split([len(b) for b in boxes])):  # (N_i, 1, M, M)
            d["mask_probs"] = p
        return detections


class MaskRCNN(RCNN):
    """Faster R-CNN (``lit_papers.detection.rcnn.RCNN``, all its options) + the mask branch. Mask options:
    ``mask_pooler`` "align" | "pool" (Table 2c/2d), ``mask_pool_size`` 14, ``mask_head_convs`` 4 x ``mask_head_dim``
    256 (Fig. 4 right; 0 for the C4 head of Fig. 4 left, which branches from the box head's res5),
    ``class_agnostic_masks`` (sec. 4.2), ``mask_loss`` "sigmoid" | "softmax" (Table 2b)."""

    iou_types = ("bbox", "segm")

    def __init__(self, *, mask_pooler: str = "align", mask_pool_size: int = 14, mask_head_convs: int = 4,
                 mask_head_dim: int = 256, class_agnostic_masks: bool = False, mask_loss: str = "sigmoid",
                 mask_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        pooler = RoIPooler(featmap_names=self.roi_featmap_names, strides=self.roi_strides, output_size=mask_pool_size,
                           kind=mask_pooler, sampling_ratio=self.sampling_ratio, aligned=self.aligned)
        num_masks = 1 if class_agnostic_masks else self.num_classes + 1
        trunk = getattr(self.roi_heads.box_head, "trunk", None)  # res5 of the C4 box head
        if trunk is None:  # Fig. 4 right: convs on the pooled features, 14 -> 28
            head = MaskHead(in_channels=self.roi_channels, num_masks=num_masks, num_convs=mask_head_convs,
                            dim=mask_head_dim)
            mask_size = 2 * mask_pool_size
        else:  # Fig. 4 left: the same res5 (shared weights), then deconv: 14 -> res5 -> 7 -> 14
            if mask_head_convs:
                raise ValueError("the C4 mask head (Fig. 4 left) has no 3x3 convs after res5: set mask_head_convs: 0")
            head = nn.Sequential(trunk, MaskHead(in_channels=self.roi_heads.box_head.out_features, num_masks=num_masks,
                                                 num_convs=0, dim=mask_head_dim))
            mask_size = mask_pool_size
        self.roi_heads.mask_branch = MaskBranch(pooler=pooler, head=head, mask_size=mask_size,
                                                class_agnostic=class_agnostic_masks, loss=mask_loss)
        self.mask_threshold = mask_threshold

    def postprocess(self, detections: list[dict], image_sizes, original_sizes) -> list[dict]:
        """Boxes to original pixels (Faster R-CNN's postprocess), then each M x M mask probability map pasted into
        its box in the original image and binarised at ``mask_threshold`` (sec. 3.1): ``masks`` (N, H0, W0) uint8."""
        detections = super().postprocess(detections, image_sizes, original_sizes)
        for det, (h0, w0) in zip(detections, original_sizes):
            probs = paste_masks_in_image(det["mask_probs"], det["boxes"], (int(h0), int(w0)), padding=1)  # (N, 1, H0, W0)
            det["masks"] = (probs[:, 0] >= self.mask_threshold).to(torch.uint8)  # (N, H0, W0)
        return detections
