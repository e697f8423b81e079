"""Parity of the parts our detectors share with torchvision's, on the same inputs: RoIAlign pooling
(``aligned=True`` and ``False``, one map and the FPN pyramid) against a float64 slow implementation and
torchvision's ``MultiScaleRoIAlign``; anchor generation against the hand formula and torchvision's
``maskrcnn_resnet50_fpn``; box coding against the R-CNN parametrisation written out; RPN proposal selection
(pre-NMS top-k per level, decode, clip, NMS 0.7, post-NMS top-k) against torchvision's R50-FPN RPN with the
same head weights."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

from lit_papers.detection.poolers import RoIPooler
from lit_papers.detection.rcnn import RCNN
from lit_papers.detection.roi_heads import RoIHeads
from lit_papers.detection.two_stage import build_rpn


def slow_roi_align(feature, box, *, out, scale, ratio, aligned):
    """float64 reference of RoIAlign (He et al. 2017 sec. 3; torchvision's boundary rules), one RoI on (C, H, W)."""
    feature = feature.double()
    c, h, w = feature.shape
    off = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) * scale - off for v in box)
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    bw, bh = rw / out, rh / out
    gw = ratio if ratio > 0 else math.ceil(rw / out)
    gh = ratio if ratio > 0 else math.ceil(rh / out)

    def bilinear(y, x):
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return torch.zeros(c, dtype=torch.float64)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= h - 1:
            y0 = y1_ = h - 1
            y = float(y0)
        else:
            y1_ = y0 + 1
        if x0 >= w - 1:
            x0 = x1_ = w - 1
            x = float(x0)
        else:
            x1_ = x0 + 1
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * feature[:, y0, x0] + (1 - ly) * lx * feature[:, y0, x1_]
                + ly * (1 - lx) * feature[:, y1_, x0] + ly * lx * feature[:, y1_, x1_])

    result = torch.zeros(c, out, out, dtype=torch.float64)
    for i in range(out):
        for j in range(out):
            acc = torch.zeros(c, dtype=torch.float64)
            for a in range(gh):
                for b in range(gw):
                    acc += bilinear(y1 + i * bh + (a + 0.5) * bh / gh, x1 + j * bw + (b + 0.5) * bw / gw)
            result[:, i, j] = acc / max(gh * gw, 1)
    return result


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("ratio", [2, 0])
def test_roi_align_pooler_matches_float64_reference(aligned, ratio):
    torch.manual_seed(0)
    feature = torch.randn(2, 3, 12, 10)
    boxes = [torch.tensor([[3.0, 5.0, 70.0, 90.0], [-10.0, -4.0, 30.0, 20.0]]), torch.tensor([[60.0, 70.0, 64.5, 75.0]])]
    pooler = RoIPooler(featmap_names=["c3"], strides=[8], output_size=4, kind="align", sampling_ratio=ratio,
                       aligned=aligned)
    ours = pooler({"c3": feature}, boxes)
    refs = [slow_roi_align(feature[i], b, out=4, scale=1 / 8, ratio=ratio, aligned=aligned)
            for i, bs in enumerate(boxes) for b in bs]
    torch.testing.assert_close(ours.double(), torch.stack(refs), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, RoIPooler(featmap_names=["c3"], strides=[8], output_size=4, sampling_ratio=ratio,
                                              aligned=not aligned)({"c3": feature}, boxes))


@pytest.mark.parametrize("aligned", [True, False])
def test_fpn_pooler_matches_torchvision_and_the_reference(aligned):
    torch.manual_seed(0)
    feats = OrderedDict((f"p{k}", torch.randn(1, 2, 256 // 2**k, 256 // 2**k)) for k in range(2, 6))
    boxes = [torch.tensor([[10.0, 10, 40, 60], [0, 0, 250, 250], [30, 40, 150, 140], [5.0, 5, 20, 20],
                           [0, 0, 900, 700]])]
    ours = RoIPooler(featmap_names=list(feats), strides=[4, 8, 16, 32], output_size=7, sampling_ratio=2,
                     aligned=aligned)(feats, boxes, [(256, 256)])
    if not aligned:  # torchvision's MultiScaleRoIAlign has aligned=False built in
        torch.testing.assert_close(ours, MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, [(256, 256)]))
    levels = [min(max(math.floor(4 + math.log2(math.sqrt((x1 - x0) * (y1 - y0)) / 224)), 2), 5)
              for x0, y0, x1, y1 in boxes[0].tolist()]  # FPN eq. 1, clamped to P2..P5
    assert levels == [2, 4, 2, 2, 5]
    for r, level in enumerate(levels):
        ref = slow_roi_align(feats[f"p{level}"][0], boxes[0][r], out=7, scale=2.0**-level, ratio=2, aligned=aligned)
        torch.testing.assert_close(ours[r].double(), ref, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def torchvision_r50_fpn():
    torch.manual_seed(0)
    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81)


def _our_default_rpn():
    """The RPN our R50-FPN detector builds from RCNN's defaults (anchors 32..512 on P2..P6, 2000/1000...)."""
    import inspect

    d = {k: p.default for k, p in inspect.signature(RCNN.__init__).parameters.items()}
    return build_rpn(in_channels=256, anchor_sizes=d["anchor_sizes"], aspect_ratios=d["aspect_ratios"],
                     batch_size_per_image=d["rpn_batch_size_per_image"],
                     pre_nms_top_n_train=d["rpn_pre_nms_top_n_train"], post_nms_top_n_train=d["rpn_post_nms_top_n_train"],
                     pre_nms_top_n_test=d["rpn_pre_nms_top_n_test"], post_nms_top_n_test=d["rpn_post_nms_top_n_test"])


def _pyramid(batch=2, size=256, channels=256):
    g = torch.Generator().manual_seed(1)
    feats = OrderedDict((str(i), torch.randn(batch, channels, size // 2**k, size // 2**k, generator=g))
                        for i, k in enumerate(range(2, 7)))
    images = ImageList(torch.zeros(batch, 3, size, size), [(size, size - 40), (size - 16, size)])
    return images, feats


def test_anchors_match_the_hand_formula_and_torchvision(torchvision_r50_fpn):
    ours = _our_default_rpn()
    images, feats = _pyramid()
    anchors = ours.anchor_generator(images, list(feats.values()))
    reference = torchvision_r50_fpn.rpn.anchor_generator(images, list(feats.values()))
    for a, b in zip(anchors, reference):
        torch.testing.assert_close(a, b)
    # hand formula (Faster R-CNN sec. 3.1: anchor at each location, size s, ratio r = h / w, area s^2), location
    # major, then ratio, then size; torchvision centres anchors on (j * stride, i * stride) and rounds the corners
    expected = []
    for size, stride in zip((32, 64, 128, 256, 512), (4, 8, 16, 32, 64)):  # P2..P6
        n = 256 // stride
        for i in range(n):
            for j in range(n):
                for r in (0.5, 1.0, 2.0):
                    hw = size * math.sqrt(r) / 2, size / math.sqrt(r) / 2
                    expected.append([j * stride + round(-hw[1]), i * stride + round(-hw[0]),
                                     j * stride + round(hw[1]), i * stride + round(hw[0])])
    torch.testing.assert_close(anchors[0], torch.tensor(expected, dtype=torch.float32))


def test_box_coding_is_the_rcnn_parametrisation(torchvision_r50_fpn):
    heads = RoIHeads(box_pooler=torch.nn.Identity(), box_head=torch.nn.Identity(), box_predictor=torch.nn.Identity())
    assert heads.box_coder.weights == torchvision_r50_fpn.roi_heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert _our_default_rpn().box_coder.weights == torchvision_r50_fpn.rpn.box_coder.weights == (1.0, 1.0, 1.0, 1.0)
    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 2, generator=g, dtype=torch.float64) * 100
    proposals = torch.cat([p, p + 5 + torch.rand(6, 2, generator=g, dtype=torch.float64) * 50], 1)
    gt = proposals + torch.randn(6, 4, generator=g, dtype=torch.float64) * 3
    deltas = heads.box_coder.encode_single(gt, proposals)

    def centre_size(b):
        return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]

    px, py, pw, ph = centre_size(proposals)
    gx, gy, gw, gh = centre_size(gt)
    expected = torch.stack([10 * (gx - px) / pw, 10 * (gy - py) / ph, 5 * torch.log(gw / pw), 5 * torch.log(gh / ph)], 1)
    torch.testing.assert_close(deltas, expected)
    torch.testing.assert_close(heads.box_coder.decode_single(deltas, proposals), gt)


@pytest.mark.parametrize("training", [False, True])
def test_rpn_proposals_match_torchvision(torchvision_r50_fpn, training):
    ours = _our_default_rpn()
    theirs = torchvision_r50_fpn.rpn
    ours.head.load_state_dict(theirs.head.state_dict())
    ours.train(training)
    theirs.train(training)
    images, feats = _pyramid()
    targets = [{"boxes": torch.tensor([[10.0, 20, 100, 120], [50, 60, 200, 230]]), "labels": torch.tensor([1, 2])}] * 2
    with torch.no_grad():
        torch.manual_seed(3)
        p_ours, l_ours = ours(images, feats, targets if training else None)
        torch.manual_seed(3)
        p_theirs, l_theirs = theirs(images, feats, targets if training else None)
    assert [len(p) for p in p_ours] == [len(p) for p in p_theirs] == [2000 if training else 1000] * 2
    for a, b in zip(p_ours, p_theirs):
        torch.testing.assert_close(a, b)
    for k in l_theirs:
        torch.testing.assert_close(l_ours[k], l_theirs[k])


@pytest.mark.slow  # two ResNet-50 detectors: ~5 s on an idle machine, ~45 s on a loaded one
def test_whole_r50_fpn_inference_equals_torchvision_with_the_same_weights():
    """Our Mask R-CNN R50-FPN (timm resnet50 + FPN + our RoI heads/pooler/postprocess) with torchvision's
    ``maskrcnn_resnet50_fpn`` weights copied in (same parameter order and shapes) gives torchvision's detections:
    boxes, scores, labels and binary masks. ``aligned=False`` is torchvision's RoIAlign; our default (True) is
    Detectron2's half-pixel fix and gives different numbers by design."""
    torch.manual_seed(0)
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81, min_size=128,
                                   max_size=128).eval()
    from lit_papers.papers.mask_rcnn.model import MaskRCNN

    ours = MaskRCNN(num_classes=80, backbone="resnet50", aligned=False).eval()
    with torch.no_grad():
        pairs = list(zip(ours.state_dict().items(), theirs.state_dict().items()))
        assert len(pairs) == len(theirs.state_dict()) == len(ours.state_dict())
        for (name, mine), (other, value) in pairs:
            assert mine.shape == value.shape, (name, other)
            mine.copy_(value)
        g = torch.Generator().manual_seed(0)
        images = [torch.rand(3, 128, 128, generator=g) for _ in range(2)]
        a, b = ours(images), theirs(images)
    for x, y in zip(a, b):
        assert len(x["boxes"]) == len(y["boxes"]) > 0
        torch.testing.assert_close(x["boxes"], y["boxes"])
        torch.testing.assert_close(x["scores"], y["scores"])
        assert torch.equal(x["labels"], y["labels"])
        assert torch.equal(x["masks"], (y["masks"][:, 0] >= 0.5).to(torch.uint8))
