"""Golden losses: each detector's loss terms at a fixed seed on a fixed tiny batch, pinned to 1e-5, so that a
refactor that changes a number fails loudly (detectron2 keeps the same kind of test per meta-architecture).

The values were recorded with this repository's code (torch 2.14 / torchvision 0.29 / timm 1.0, CPU, fp32).
When a change is *meant* to change a number (a paper fix), update the value here and say why in the commit.
History: ``mask_rcnn_c4`` changed once, on purpose (issue 12): the C4 head became the paper's (RoIs 14x14 ->
res5 -> box / mask heads, Fig. 4 left) instead of C4 + two FC layers; ``faster_rcnn_c4`` was added then.
Sources of randomness: the weight init (``torch.manual_seed(0)`` before construction) and the RPN / RoI
samplers (``torch.manual_seed(1)`` before the forward); the batch is built from its own generator.
"""

from __future__ import annotations

import pytest
import torch

from lit_papers.papers.faster_rcnn.model import FasterRCNN
from lit_papers.papers.mask_rcnn.model import MaskRCNN

COMMON = dict(num_classes=3, backbone="resnet18", rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
              rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_head_dim=32, roi_batch_size_per_image=16)
FPN = dict(fpn=True, fpn_channels=16, anchor_sizes=((8,), (16,), (32,), (64,), (128,)))
C4 = dict(fpn=False, anchor_sizes=((8, 16, 32, 64),))
# Mask R-CNN C4 = Fig. 4 left: RoIs 14x14 from C4 -> res5 -> box head (avg pool) and mask head (deconv)
MASK_C4 = dict(box_head="res5", box_pool_size=14, mask_pool_size=14, mask_head_convs=0, mask_head_dim=16)
DETECTORS = {
    "faster_rcnn_fpn": (FasterRCNN, {**COMMON, **FPN}),
    "mask_rcnn_fpn": (MaskRCNN, {**COMMON, **FPN, "mask_head_convs": 2, "mask_head_dim": 16}),
    "faster_rcnn_c4": (FasterRCNN, {**COMMON, **C4, "box_pooler": "pool"}),  # the Fast R-CNN setting
    "mask_rcnn_c4": (MaskRCNN, {**COMMON, **C4, **MASK_C4}),
}


def golden_batch():
    """Two 64-px images (one 56 px wide), two objects each, with masks."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64 - 8 * i, generator=g) for i in range(2)]
    targets = []
    for i in range(2):
        masks = torch.zeros(2, 64, 64 - 8 * i, dtype=torch.uint8)
        masks[0, 5:30, 8:30] = 1
        masks[1, 30:60, 20:50] = 1
        targets.append({"boxes": torch.tensor([[8.0, 5, 30, 30], [20, 30, 50, 60]]), "labels": torch.tensor([1, 3]),
                        "masks": masks, "image_id": i})
    return images, targets


def losses_of(name: str) -> dict[str, torch.Tensor]:
    cls, options = DETECTORS[name]
    torch.manual_seed(0)
    model = cls(**options)
    images, targets = golden_batch()
    torch.manual_seed(1)
    with torch.no_grad():
        return model(images, targets)


GOLDEN = {
    "faster_rcnn_fpn": {
        "loss_objectness": 0.6923166,
        "loss_rpn_box_reg": 0.0026289,
        "loss_classifier": 1.7586759,
        "loss_box_reg": 0.0620026,
    },
    "mask_rcnn_fpn": {
        "loss_objectness": 0.6923166,
        "loss_rpn_box_reg": 0.0026289,
        "loss_classifier": 1.7586759,
        "loss_box_reg": 0.0620026,
        "loss_mask": 0.9074369,
    },
    "faster_rcnn_c4": {
        "loss_objectness": 0.6902823,
        "loss_rpn_box_reg": 0.0042022,
        "loss_classifier": 1.4569918,
        "loss_box_reg": 0.5727108,
    },
    "mask_rcnn_c4": {
        "loss_objectness": 0.6902823,
        "loss_rpn_box_reg": 0.0042022,
        "loss_classifier": 1.3269974,
        "loss_box_reg": 0.621399,
        "loss_mask": 0.7535161,
    },
}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_golden_losses(name):
    losses = losses_of(name)
    assert {k: float(v) for k, v in losses.items()} == pytest.approx(GOLDEN[name], abs=1e-5)


@pytest.mark.parametrize("name", ["mask_rcnn_fpn", "faster_rcnn_c4"])
def test_channels_last_is_a_layout_not_a_change(name):
    """``channels_last`` (the default) only changes the memory layout of the backbone: the same weights give
    the same losses and detections in NCHW, and the backbone's maps really are NHWC."""
    cls, options = DETECTORS[name]
    torch.manual_seed(0)
    nhwc = cls(**options)
    torch.manual_seed(0)
    nchw = cls(**options, channels_last=False)
    nchw.load_state_dict(nhwc.state_dict())
    images, targets = golden_batch()
    assert all(p.is_contiguous() for p in nchw.features.parameters())
    with torch.no_grad():
        losses = []
        for model in (nhwc, nchw):
            torch.manual_seed(1)
            losses.append({k: float(v) for k, v in model(images, targets).items()})
        assert losses[0] == pytest.approx(losses[1], abs=1e-5)
        assert losses[0] == pytest.approx(GOLDEN[name], abs=1e-5)
        nhwc.eval(), nchw.eval()
        batch = nchw.batch_images(images)[0]
        maps = nhwc.features(batch.contiguous(memory_format=torch.channels_last))
        assert all(m.is_contiguous(memory_format=torch.channels_last) for m in maps.values())
        assert not any(m.is_contiguous() for m in maps.values() if m.shape[-1] * m.shape[-2] > 1)  # 1x1 is both
        for x, y in zip(maps.values(), nchw.features(batch).values()):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
        a, b = nhwc(images), nchw(images)
    # an untrained detector's scores are near-ties, so NMS may keep other boxes: compare the score distributions
    for x, y in zip(a, b):
        assert len(x["scores"]) == len(y["scores"])
        torch.testing.assert_close(x["scores"].sort().values, y["scores"].sort().values, atol=1e-4, rtol=1e-3)
