"""R-CNN (Girshick et al. 2014): the warped crop with context padding by hand, the network's outputs, and the tiny
recipe end to end through the CLI (fine-tuning, SVMs + regressors fitted and restored from the checkpoint)."""

from __future__ import annotations

import csv

import pytest
import torch

from lit_papers.papers.rcnn.model import RCNN, ConvNet, warp_crops


def _ramp(h: int, w: int) -> torch.Tensor:
    """(2, H, W): channel 0 holds the column index, channel 1 the row index (pixel centres at i + 1/2)."""
    cols = torch.arange(w, dtype=torch.float32).expand(h, w)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    return torch.stack([cols, rows])


def test_warp_with_context_padding_by_hand():
    image = _ramp(32, 32)
    # box (8, 8)-(24, 24), width 16, crop 8 with p = 2: the box spans 8 - 4 = 4 output pixels, so it is dilated by
    # 16 * 2 / 4 = 8 on each side to (0, 0)-(32, 32); output pixel j samples x = (j + 1/2) * 4 = 2, 6, ..., 30,
    # where bilinear interpolation of the ramp gives x - 1/2
    crop = warp_crops(image, torch.tensor([[8.0, 8, 24, 24]]), size=8, padding=2)
    expected = torch.arange(8, dtype=torch.float32) * 4 + 1.5
    torch.testing.assert_close(crop[0, 0, 3], expected)
    torch.testing.assert_close(crop[0, 1, :, 5], expected)
    # box (0, 0)-(16, 16): dilated to (-8, -8)-(24, 24); samples at x = -6, -2 fall outside the image -> 0 (the mean
    # after mean subtraction), x = 2, 6, ... -> x - 1/2
    crop = warp_crops(image, torch.tensor([[0.0, 0, 16, 16]]), size=8, padding=2)
    torch.testing.assert_close(crop[0, 0, 4], torch.tensor([0.0, 0.0, 1.5, 5.5, 9.5, 13.5, 17.5, 21.5]))
    # anisotropic: a 16 x 4 box fills the whole crop both ways (R-CNN warps, it does not keep the aspect ratio)
    crop = warp_crops(image, torch.tensor([[8.0, 14, 24, 18]]), size=8, padding=0)
    torch.testing.assert_close(crop[0, 0, 0], torch.arange(8, dtype=torch.float32) * 2 + 8.5)
    torch.testing.assert_close(crop[0, 1, :, 0], torch.arange(8, dtype=torch.float32) * 0.5 + 13.75)
    with pytest.raises(ValueError, match="no room"):
        warp_crops(image, torch.tensor([[0.0, 0, 4, 4]]), size=8, padding=4)


def test_rcnn_outputs_and_mean_padding():
    torch.manual_seed(0)
    net = RCNN(backbone=ConvNet(widths=(4, 8)), num_classes=3, crop_size=16, context_padding=1.13, pool5_kernel=2,
               pool5_stride=2, fc_dim=12).eval()
    image, boxes = torch.rand(3, 40, 50), torch.tensor([[0.0, 0, 20, 20], [10, 5, 45, 38], [30, 30, 31, 31]])
    out = net(image, boxes)
    assert out["pool5"].shape == (3, 8 * 4 * 4) and out["fc7"].shape == (3, 12) and out["logits"].shape == (3, 4)
    # each proposal is its own CNN pass: the outputs of one box do not depend on the other boxes
    torch.testing.assert_close(net(image, boxes[1:2])["logits"], out["logits"][1:2], rtol=1e-5, atol=1e-6)
    # the context outside the image is the image mean (0 after normalisation), not black
    crops = net.crops(image, torch.tensor([[-40.0, -40, -20, -20]]))
    assert crops.abs().max() == 0


def _metrics(path) -> dict[str, float]:
    rows = list(csv.DictReader(path.open()))
    return {k: float(v) for row in rows for k, v in row.items() if v not in ("", None)}


def test_tiny_fit_and_test_through_the_cli(cli, tiny_fit):
    tiny_fit("rcnn", into=cli.runs)  # the session's shared fit (conftest.py)
    run = cli.runs / "rcnn" / "tiny" / "v0"
    fitted = _metrics(run / "csv" / "metrics.csv")
    assert fitted["svm/images"] == 8 and fitted["svm/mined"] > 0 and fitted["val/voc07_mAP_n"] == 4
    assert 0 <= fitted["val/voc07_mAP"] <= 1
    proc = cli("test", "--config", "configs/rcnn/tiny.yaml", "--wandb", "false",
               "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    tested = _metrics(cli.runs / "rcnn" / "tiny" / "v1" / "csv" / "metrics.csv")
    # the SVMs and regressors come back from the checkpoint (not refitted: no svm/* logged), same numbers
    assert "svm/images" not in tested, proc.stdout[-2000:]
    assert tested["test/voc07_mAP"] == pytest.approx(fitted["val/voc07_mAP"], abs=1e-6)
    assert tested["test/voc07_mAP_no_bbox"] == pytest.approx(fitted["val/voc07_mAP_no_bbox"], abs=1e-6)
    assert tested["test/voc07_mAP_no_bbox_n"] == tested["test/voc07_mAP_n"] == 4
    assert not [k for k in tested if k.endswith(("_ci95_no_bbox", "_n_no_bbox"))]
