"""The backbone contract over every backbone any config uses (as timm tests ``features_only`` over all its
models): build with random init, run a small non-square input, and check the channels and strides of the REAL
output maps against what the module claims and what the detector expects (16 for a single-map detector; 4..32
+ P6 for FPN). Plus the VGG-16 Faster R-CNN of ``configs/faster_rcnn/vgg16_voc07.yaml``: conv5_3 at stride 16."""

from __future__ import annotations

import inspect

import pytest
import torch
import yaml

from lit_papers.backbones.timm_backbone import TimmBackbone, indices_for_strides, timm_stage
from lit_papers.detection.box_heads import FCHead, fc_head_from_classifier
from lit_papers.detection.rcnn import RCNN
from lit_papers.detection.two_stage import build_features
from tests.conftest import REPO


def _detector_backbones() -> list[tuple[str, bool, int]]:
    """(backbone, fpn, feature_stride) of every config whose model has a ``backbone`` option (RCNN's defaults
    filled in)."""
    defaults = {k: p.default for k, p in inspect.signature(RCNN.__init__).parameters.items()}
    found = set()
    for path in sorted((REPO / "configs").glob("*/*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        inner = (((raw.get("model") or {}).get("init_args") or {}).get("model") or {}).get("init_args") or {}
        if isinstance(inner.get("backbone"), str):  # detector configs name a timm model; FCN injects a module
            # (its TimmBackbone taps are checked against VGG-16's layers in tests/papers/test_fcn.py)
            found.add((inner["backbone"], bool(inner.get("fpn", defaults["fpn"])),
                       int(inner.get("feature_stride", defaults["feature_stride"]))))
    return sorted(found)


BACKBONES = _detector_backbones()


def test_the_walk_finds_the_detection_configs():
    assert {("vgg16", False, 16), ("resnet50", True, 16), ("resnet50", False, 32)} <= set(BACKBONES)


@pytest.mark.parametrize("backbone,fpn,stride", BACKBONES, ids=lambda v: str(v))
def test_backbone_contract(backbone, fpn, stride):
    torch.manual_seed(0)
    features, roi_names, roi_strides = build_features(backbone=backbone, fpn=fpn, fpn_channels=16,
                                                      feature_stride=stride)
    features.eval()
    h, w = 192, 128  # multiples of 64 (P6), non-square
    with torch.no_grad():
        maps = features(torch.rand(1, 3, h, w))
    assert list(maps) == list(features.names)
    real_strides = [h // m.shape[-2] for m in maps.values()]
    assert [w // m.shape[-1] for m in maps.values()] == real_strides
    assert real_strides == list(features.strides)
    assert [m.shape[1] for m in maps.values()] == list(features.out_channels)
    expected = [4, 8, 16, 32, 64] if fpn else [stride]
    assert real_strides == expected
    assert roi_strides == ([4, 8, 16, 32] if fpn else [stride]) and set(roi_names) <= set(maps)


def test_maps_are_chosen_by_stride_not_index():
    assert indices_for_strides("resnet18", (16,)) == (3,)  # layer3 = C4
    assert indices_for_strides("vgg16", (16,)) == (4,)  # conv5_3; timm index 3 is conv4_3 at stride 8
    with pytest.raises(ValueError, match=r"'resnet18' has no feature map at stride 64.*layer4: stride 32"):
        TimmBackbone(name="resnet18", strides=(64,))


def _vgg_config_options() -> dict:
    raw = yaml.safe_load((REPO / "configs/faster_rcnn/vgg16_voc07.yaml").read_text())
    options = dict(raw["model"]["init_args"]["model"]["init_args"])
    options["pretrained"] = False  # tests download nothing; the architecture is the same
    options["box_head_from_backbone"] = False  # (needs the ImageNet classifier; tested below on its own)
    return options


def test_vgg16_voc07_config_uses_conv5_3_at_stride_16():
    from lit_papers.papers.faster_rcnn.model import FasterRCNN

    model = FasterRCNN(**_vgg_config_options())
    body = model.features
    assert body.strides == [16] and body.out_channels == [512]
    assert body.module_names == ["features.29"]  # ReLU after conv5_3 (features.28), before the last pool
    last_conv = [m for m in body.body.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert last_conv.in_channels == 512 and len([m for m in body.body.modules() if isinstance(m, torch.nn.Conv2d)]) == 13
    with torch.no_grad():
        out = body(torch.rand(1, 3, 96, 128))
    assert [tuple(v.shape) for v in out.values()] == [(1, 512, 6, 8)]
    # conv1_x and conv2_x frozen (freeze_at 2), conv3_1 and up trained (Fast R-CNN sec. 4.5)
    convs = [m for m in body.body.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.weight.requires_grad for m in convs] == [False] * 4 + [True] * 9
    head = model.roi_heads.box_head
    assert isinstance(head, FCHead) and head.fc6.in_features == 512 * 7 * 7 and head.fc7.out_features == 4096
    assert head.drop.p == 0.5
    assert model.roi_heads.box_roi_pool.kind == "pool" and model.roi_heads.box_roi_pool.strides == [16]


def test_fc_head_from_classifier_equals_the_conv_classifier():
    """fc6/fc7 copied from a conv classifier (k x k conv on a k x k map) compute the same function."""
    torch.manual_seed(0)
    mlp = torch.nn.Module()
    mlp.fc1, mlp.fc2 = torch.nn.Conv2d(8, 16, 3), torch.nn.Conv2d(16, 16, 1)
    head = fc_head_from_classifier(FCHead(in_features=8 * 9, dim=16, dropout=0.5), mlp).eval()
    x = torch.randn(5, 8, 3, 3)
    expected = torch.relu(mlp.fc2(torch.relu(mlp.fc1(x)))).flatten(1)
    torch.testing.assert_close(head(x), expected)
    with pytest.raises(ValueError, match="does not fit"):
        fc_head_from_classifier(FCHead(in_features=8 * 4, dim=16), mlp)


def test_res5_stage_halves_the_roi_features():
    trunk, channels = timm_stage("resnet18", from_stride=16, to_stride=32)
    assert channels == 512 and list(dict(trunk.named_children())) == ["layer4"]
    assert trunk(torch.rand(2, 256, 14, 14)).shape == (2, 512, 7, 7)  # stride 2 in res5's first block
