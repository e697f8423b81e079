"""SSD (Liu et al. 2016): SSD300's structure, outputs, loss and detections against torchvision's ssd300_vgg16
(weights=None, weights_backbone=None) with the same weights copied in (the oracle), the fc6/fc7 subsampling, the
interval its tiny recipe logs, and the tiny recipe end to end through the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import ssd300_vgg16

from lit_papers.ops.default_boxes import ssd_scales
from lit_papers.papers.ssd.model import SSD, SSDVGG, L2Norm, load_torchvision_ssd300

TV_MEAN, TV_STD = (0.48235, 0.45882, 0.40784), (1 / 255, 1 / 255, 1 / 255)
TV_COCO_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)  # torchvision's (COCO) scales, to compare like for like


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.fixture(scope="module")
def pair():
    """Our SSD300 and torchvision's, same weights (20 classes + background), same scales / steps / normalisation."""
    torch.manual_seed(0)
    theirs = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21).eval()
    theirs.anchor_generator.clip = False  # torchvision clamps box sizes to the image; the paper's boxes are not
    ours = SSD(num_classes=20, scales=TV_COCO_SCALES, steps=(8, 16, 32, 64, 100, 300), mean=TV_MEAN, std=TV_STD).eval()
    load_torchvision_ssd300(ours, theirs)
    return ours, theirs


def test_ssd300_has_torchvisions_size_maps_and_8732_boxes(pair):
    ours, theirs = pair
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    with torch.no_grad():
        maps = ours.feature_maps(torch.rand(1, 3, 300, 300))
    assert [tuple(m.shape[1:]) for m in maps] == [(512, 38, 38), (1024, 19, 19), (512, 10, 10), (256, 5, 5),
                                                  (256, 3, 3), (256, 1, 1)]  # conv4_3, fc7, conv8_2 .. conv11_2
    assert ours.priors(maps).shape == (8732, 4)
    fc6 = _convs(ours.base)[13]
    assert fc6.dilation == (6, 6) and fc6.kernel_size == (3, 3) and fc6.out_channels == 1024  # atrous fc6


def test_head_outputs_and_detections_equal_torchvision(pair):
    ours, theirs = pair
    torch.manual_seed(1)
    images = [torch.rand(3, 300, 300), torch.rand(3, 300, 300)]
    with torch.no_grad():
        x, _ = ours.batch_images(images)
        logits, offsets = ours.head_outputs(ours.feature_maps(x))
        tv = theirs.head(list(theirs.backbone(theirs.transform(images)[0].tensors).values()))
        torch.testing.assert_close(logits, tv["cls_logits"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(offsets, tv["bbox_regression"], rtol=1e-4, atol=1e-4)
        mine, ref = ours(images, original_sizes=[(300, 300), (150, 450)]), theirs(images)
    for a, b, (h0, w0) in zip(mine, ref, [(300, 300), (150, 450)]):
        assert len(a["boxes"]) == len(b["boxes"]) == 200  # top 200 (sec. 3), score > 0.01, NMS 0.45 per class
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
        assert torch.equal(a["labels"], b["labels"])
        scale = torch.tensor([w0 / 300, h0 / 300, w0 / 300, h0 / 300])
        torch.testing.assert_close(a["boxes"], b["boxes"] * scale, rtol=1e-4, atol=1e-3)


def test_training_loss_equals_torchvisions_on_separated_objects(pair):
    ours, theirs = pair
    torch.manual_seed(2)
    images = [torch.rand(3, 300, 300), torch.rand(3, 300, 300)]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 200.0], [180.0, 40.0, 290.0, 110.0]]),
                "labels": torch.tensor([3, 15])},
               {"boxes": torch.tensor([[60.0, 60.0, 240.0, 250.0]]), "labels": torch.tensor([7])}]
    ours.train(), theirs.train()
    try:
        torch.manual_seed(3)
        mine = ours(images, targets)
        torch.manual_seed(3)
        ref = theirs(images, [{k: v.clone() for k, v in t.items()} for t in targets])
    finally:
        ours.eval(), theirs.eval()
    torch.testing.assert_close(mine["loss_box_reg"], ref["bbox_regression"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mine["loss_classifier"], ref["classification"], rtol=1e-4, atol=1e-5)
    assert ours.last_counts["num_negative"] == 3 * ours.last_counts["num_positive"]  # 3:1 hard negatives


def test_l2norm_unit_norm_times_scale():
    x = torch.randn(2, 5, 3, 4)
    y = L2Norm(channels=5, scale=20.0)(x)
    torch.testing.assert_close(y.norm(dim=1), torch.full((2, 3, 4), 20.0))
    torch.testing.assert_close(y / y.norm(dim=1, keepdim=True), x / x.norm(dim=1, keepdim=True))


def test_fc6_fc7_subsampled_from_the_imagenet_classifier(monkeypatch):
    import timm

    torch.manual_seed(0)
    vgg = timm.create_model("vgg16", pretrained=False)
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False: vgg)
    base = SSDVGG()
    base.load_imagenet_vgg16(pretrained=False)
    convs = _convs(base)
    assert torch.equal(convs[0].weight, vgg.features[0].weight)
    assert torch.equal(convs[12].weight, vgg.features[28].weight)  # conv5_3
    fc6_w = vgg.pre_logits.fc1.weight  # (4096, 512, 7, 7)
    assert torch.equal(convs[13].weight[5], fc6_w[20][:, [0, 3, 6]][:, :, [0, 3, 6]])  # filter 20, taps 0/3/6
    assert torch.equal(convs[14].weight[:, :, 0, 0], vgg.pre_logits.fc2.weight[::4, ::4, 0, 0])
    with pytest.raises(ValueError, match="full VGG-16 widths"):
        SSDVGG(widths=(8, 8, 8, 8, 8)).load_imagenet_vgg16(pretrained=False)


def test_config_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="full widths"):
        load_torchvision_ssd300(SSD(num_classes=3), ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21))
    with pytest.raises(ValueError, match="need 6 aspect-ratio lists and 7 scales"):
        SSD(scales=ssd_scales(5))


def test_tiny_fit_and_test_through_the_cli(cli, tiny_fit):
    tiny_fit("ssd", into=cli.runs)  # the session's shared fit (conftest.py)
    run = cli.runs / "ssd" / "tiny" / "v0"
    proc = cli("test", "--config", "configs/ssd/tiny.yaml", "--wandb", "false",
               "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert "test/voc07_mAP" in proc.stdout
    metrics = (cli.runs / "ssd" / "tiny" / "v1" / "csv" / "metrics.csv").read_text()
    assert "test/voc07_mAP_ci95" in metrics and "test/voc07_mAP_n" in metrics
