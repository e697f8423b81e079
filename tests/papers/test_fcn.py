"""FCN (Long et al. 2015): bilinear upsampling init vs interpolate, the skip wiring, VGG taps, staged init, the
void-ignoring loss, the picture, and the tiny recipe end to end through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_papers.papers.fcn.model import FCN, Upsample, VGGFeatures, bilinear_kernel, copy_classifier


def _small(skips: int, **kw) -> FCN:
    backbone = VGGFeatures(stage_convs=(1, 1, 1, 1, 1), widths=(4, 8, 8, 8, 8), batch_norm=False)
    return FCN(backbone=backbone, num_classes=3, skips=skips, fc_channels=8, dropout=0.0, **kw).eval()


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32])
def test_upsampling_init_equals_bilinear_interpolation(factor):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    up = Upsample(channels=3, factor=factor, learned=True)
    # interpolate (align_corners=False) clamps at the borders; the deconvolution sees zeros there, so compare on a
    # replicate-padded input with the padding's outputs cropped away
    y = up(F.pad(x, (1, 1, 1, 1), mode="replicate"))[..., factor:-factor, factor:-factor]
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert y.shape == expected.shape == (2, 3, 5 * factor, 7 * factor)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-5)
    assert up(x).shape[-2:] == (5 * factor, 7 * factor)  # exactly f times: no crop offsets needed


def test_bilinear_kernel_by_hand_and_per_channel():
    w = bilinear_kernel(2, 2)
    assert w.shape == (2, 2, 4, 4)
    torch.testing.assert_close(w[0, 0, 0], torch.tensor([0.25, 0.75, 0.75, 0.25]) * 0.25)
    assert w[0, 1].abs().sum() == 0 and w[1, 0].abs().sum() == 0  # no mixing of classes
    assert not any(n.startswith("final_up") for n, _ in _small(2).named_parameters())  # fixed (sec. 4.2)
    assert {n for n, _ in _small(2).named_parameters() if n.startswith("up2")} == {"up2.0.weight", "up2.1.weight"}


@pytest.mark.parametrize("skips", [0, 1, 2])
def test_output_is_the_input_size_and_zero_initialised(skips):
    model = _small(skips)
    out = model(torch.rand(2, 3, 70, 45))
    assert out.shape == (2, 3, 70, 45)
    assert out.abs().max() == 0  # zero-initialised score layers (sec. 4.2): all scores start at 0
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in _small(0).parameters())
    # each skip: a 1x1 score layer on an 8-channel pool map (8*3 + 3) and a learned 2x deconvolution (3*3*4*4)
    assert extra == skips * (8 * 3 + 3 + 3 * 3 * 16)


def test_fcn32s_output_is_the_bilinear_upsampling_of_the_stride_32_scores():
    torch.manual_seed(0)
    model = _small(0)
    torch.nn.init.normal_(model.score_fr.weight)
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        pool5 = model.backbone((x - model.mean) / model.std)["pool5"]
        score = model.score_fr(model.fc7(model.fc6(pool5)))  # (1, 3, 4, 5)
        out = model(x)
    expected = F.interpolate(score, scale_factor=32, mode="bilinear", align_corners=False)
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))  # interpolate clamps the outer half-cell
    torch.testing.assert_close(out[inner], expected[inner], rtol=0, atol=1e-5)


def test_fcn8s_adds_the_skips_at_their_strides():
    torch.manual_seed(0)
    model = _small(2, skip_scales=(1.0, 1.0))
    torch.nn.init.normal_(model.score_skips[1].weight)  # only the pool3 skip is non-zero
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        pool3 = model.backbone((x - model.mean) / model.std)["pool3"]
        skip = model.score_skips[1](pool3)  # (1, 3, 8, 8)
        out = model(x)
    expected = F.interpolate(skip, scale_factor=8, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[..., 4:-4, 4:-4], expected[..., 4:-4, 4:-4], rtol=0, atol=1e-5)
    scaled = _small(2, skip_scales=(0.01, 0.0001))
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), out * 0.0001, rtol=1e-4, atol=1e-7)  # PAMI at-once scaling


def test_timm_vgg16_taps_are_pool3_pool4_pool5():
    import timm

    from lit_papers.backbones.timm_backbone import TimmBackbone

    torch.manual_seed(0)
    full = timm.create_model("vgg16", pretrained=False).eval()
    backbone = TimmBackbone(name="vgg16", out_indices=(2, 3, 5))
    backbone.body.load_state_dict({k.replace("features.", "features_"): v for k, v in full.state_dict().items()
                                   if k.startswith("features")})
    model = FCN(backbone=backbone, num_classes=21, skips=2, taps=(0, 1, 2), fc_channels=4096).eval()
    copy_classifier(model, full.pre_logits)
    assert torch.equal(model.fc6[0].weight, full.pre_logits.fc1.weight)  # ImageNet fc6 carried over (sec. 3.1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        maps = list(backbone(x).values())
        taps = [pool(maps[i]) for pool, i in zip(model.pools, model.taps)]
        # VGG-16 features: pool3 = features[16], pool4 = features[23], pool5 = features[30]
        for tap, end in zip(taps, (17, 24, 31)):
            torch.testing.assert_close(tap, full.features[:end](x))
    with pytest.raises(ValueError, match="stride"):
        FCN(backbone=backbone, taps=(0, 2, 2), fc_channels=8)


def test_staged_init_copies_the_coarser_net_and_keeps_new_layers_at_init(tmp_path):
    from lit_papers.papers.fcn.module import FCNLitModule

    torch.manual_seed(0)
    coarse = FCNLitModule(model=_small(0), optimizer=torch.optim.SGD, num_classes=3)
    torch.nn.init.normal_(coarse.model.score_fr.weight)
    torch.save({"state_dict": coarse.state_dict()}, tmp_path / "c.ckpt")
    fine = FCNLitModule(model=_small(1), optimizer=torch.optim.SGD, num_classes=3, init_from=str(tmp_path / "c.ckpt"))
    assert torch.equal(fine.model.score_fr.weight, coarse.model.score_fr.weight)
    assert torch.equal(fine.model.fc6[0].weight, coarse.model.fc6[0].weight)
    assert fine.model.score_skips[0].weight.abs().sum() == 0
    assert torch.equal(fine.model.up2[0].weight, bilinear_kernel(3, 2))
    assert torch.equal(fine.model.final_up.weight, bilinear_kernel(3, 16))


def test_loss_ignores_void_pixels():
    from lit_papers.papers.fcn.module import FCNLitModule

    module = FCNLitModule(model=_small(0), optimizer=torch.optim.SGD, num_classes=3)
    logits = torch.randn(2, 3, 4, 4)
    masks = torch.full((2, 4, 4), 255)
    masks[0, 1, 2], masks[1, 3, 3] = 2, 0
    by_hand = -(logits[0, :, 1, 2].log_softmax(0)[2] + logits[1, :, 3, 3].log_softmax(0)[0]) / 2
    torch.testing.assert_close(module.loss(logits, masks), by_hand)
    module.hparams.loss_reduction = "sum"
    torch.testing.assert_close(module.loss(logits, masks), by_hand)  # 2 pixels summed / 2 images


def test_strips_show_image_truth_and_prediction_in_the_voc_palette():
    from lit_papers.papers.fcn.pictures import segmentation_strips

    images = torch.zeros(2, 3, 4, 5)
    images[1, 0] = 1.0
    targets = torch.zeros(2, 4, 5, dtype=torch.long)
    targets[0, 0, 0], targets[0, 1, 1] = 1, 255
    preds = torch.full((2, 4, 5), 2, dtype=torch.long)
    pic = np.asarray(segmentation_strips(images, targets, preds, gap=2))
    assert pic.shape == (2 * 4 + 2, 3 * 5 + 2 * 2, 3)
    assert pic[6, 0].tolist() == [255, 0, 0]  # second row, image panel: red
    assert pic[0, 7].tolist() == [128, 0, 0] and pic[1, 8].tolist() == [224, 224, 192]  # truth: class 1, void
    assert pic[0, 14].tolist() == [0, 128, 0]  # prediction panel: class 2


def test_tiny_fit_and_test_through_the_cli(cli, tiny_fit):
    tiny_fit("fcn", into=cli.runs)  # the session's shared fit (conftest.py)
    run = cli.runs / "fcn" / "tiny" / "v0"
    assert (run / "segmentation_val.png").is_file()
    proc = cli("test", "--config", "configs/fcn/tiny.yaml", "--wandb", "false",
               "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert "test/mean_iu" in proc.stdout and "test/fw_iu" in proc.stdout
    metrics = (cli.runs / "fcn" / "tiny" / "v1" / "csv" / "metrics.csv").read_text()
    assert "test/pixel_acc" in metrics and "test/mean_iu_n" in metrics and "test/mean_iu_ci95" in metrics
    assert (cli.runs / "fcn" / "tiny" / "v1" / "segmentation_test.png").is_file()
