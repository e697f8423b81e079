"""DeepMask (Pinheiro et al. 2015): the branches against hand-written fully connected versions, dense windows =
patches (the interleaving trick), window geometry and mask pasting by hand, eq. 1 by hand, and the tiny recipe
end to end through the CLI (training, multi-scale proposals, AR, picture)."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_papers.papers.deepmask.model import DeepMask, VGGTrunk, finish_proposals, paste_masks, scale_pyramid
from lit_papers.papers.deepmask.module import deepmask_loss


class Patchify(nn.Module):
    """A trunk without padding (a stride-4 4x4 convolution + ReLU): features of a crop = the crop of features."""

    def __init__(self, channels: int = 6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 4, stride=4)
        self.out_channels, self.strides = [channels], [4]

    def forward(self, x):
        return OrderedDict(s4=F.relu(self.conv(x)))


def _model(**kw) -> DeepMask:
    torch.manual_seed(0)
    args = dict(trunk=Patchify(), patch_size=32, mask_channels=5, low_rank=3, mask_size=6, score_hidden=(7, 9),
                dropout=0.0)
    return DeepMask(**{**args, **kw}).eval()


def test_branches_equal_the_papers_fully_connected_layers():
    model = _model()
    feats = torch.randn(2, 6, 8, 8)  # one patch's f x f = 8 x 8 map
    code, score = model.heads(feats)
    assert code.shape == (2, 3, 1, 1) and score.shape == (2, 1, 1)
    # segmentation: 1x1 conv + ReLU, then two linear layers (no non-linearity): (5*8*8) -> 3 -> 6*6
    h = F.relu(F.conv2d(feats, model.seg_conv[0].weight, model.seg_conv[0].bias)).flatten(1)  # (2, 320)
    low = h @ model.seg_code.weight.flatten(1).T + model.seg_code.bias  # (2, 3)
    pixels = low @ model.seg_pixels.weight.flatten(1).T + model.seg_pixels.bias  # (2, 36)
    torch.testing.assert_close(model.decode(code), pixels.view(2, 6, 6))
    # scoring: 2x2 max-pool (stride 2), FC 7, ReLU, FC 9, ReLU, linear 1
    p = F.max_pool2d(feats, 2).flatten(1)  # (2, 6*4*4)
    s = F.relu(p @ model.score_fc1.weight.flatten(1).T + model.score_fc1.bias)
    s = F.relu(s @ model.score_fc2.weight.flatten(1).T + model.score_fc2.bias)
    s = s @ model.score_out.weight.flatten(1).T + model.score_out.bias
    torch.testing.assert_close(score.view(2), s.view(2))
    mask_logits, score_logits = model(torch.rand(2, 3, 32, 32))
    assert mask_logits.shape == (2, 6, 6) and score_logits.shape == (2,)
    with pytest.raises(ValueError, match="training patches"):
        model(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="even multiple"):
        DeepMask(trunk=Patchify(), patch_size=36)


def test_dense_windows_equal_patches_interleaved_scores():
    model = _model()
    big = torch.randn(1, 6, 13, 11)
    code, score = model.heads(big)
    assert code.shape == (1, 3, 6, 4) and score.shape == (1, 6, 4)  # 13 - 8 + 1, 11 - 8 + 1 windows
    for i, j in [(0, 0), (5, 3), (2, 1), (3, 2)]:  # odd offsets too: the stride-1 pooling + dilation 2
        c, s = model.heads(big[..., i:i + 8, j:j + 8])
        torch.testing.assert_close(code[..., i, j], c[..., 0, 0])
        torch.testing.assert_close(score[..., i, j], s[..., 0, 0])


def test_window_geometry_by_hand():
    model = _model()
    image = torch.rand(3, 20, 24)
    (level,) = model.pyramid(image, [2.0])
    # scaled 40 x 48, padded by 16 (+ nothing: 72 and 80 are multiples of 4) -> 18 x 20 features -> 11 x 13 windows
    assert level["scores"].shape == (11, 13) and level["sx"] == 2.0
    boxes = model.window_boxes(level, torch.tensor([0, 10]), torch.tensor([0, 12]))
    # window (i, j) is centred at (4 j, 4 i) / 2 in the original image, 32 / 2 = 16 px wide
    torch.testing.assert_close(boxes, torch.tensor([[-8.0, -8.0, 8.0, 8.0], [16.0, 12.0, 32.0, 28.0]],
                                                   dtype=torch.float64))
    # the window centred on image pixel (x, y) = its crop of the padded normalised input gives the same score
    x = F.pad((F.interpolate(image[None], scale_factor=2.0, mode="bilinear") - model.mean) / model.std,
              (16, 16, 16, 16))
    _, s = model.heads(model.trunk(x[..., 4 * 3: 4 * 3 + 32, 4 * 5: 4 * 5 + 32])["s4"])
    torch.testing.assert_close(level["scores"][3, 5], s[0, 0, 0])
    assert scale_pyramid(0.25, 2.0) == pytest.approx([2 ** (k / 2) for k in range(-4, 3)])


def test_paste_is_bilinear_upsampling_into_the_window():
    torch.manual_seed(0)
    probs = torch.rand(1, 6, 6)
    pasted = paste_masks(probs, torch.tensor([[0.0, 0.0, 12.0, 12.0]]), 12, 12)
    expected = F.interpolate(probs[None], size=(12, 12), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(pasted[:, 1:-1, 1:-1], expected[:, 1:-1, 1:-1])  # borders: zeros vs clamping
    shifted = paste_masks(torch.ones(1, 4, 4), torch.tensor([[4.0, 2.0, 8.0, 10.0]]), 12, 12)
    inside = torch.zeros(12, 12)
    inside[3:9, 5:7] = 1  # pixel centres at least half a cell inside the window
    assert torch.equal(shifted[0][inside.bool()], torch.ones(12))
    # bilinear fading reaches half a mask cell (2 px tall, 1 px wide here) past the window's edge, no further
    assert shifted[0][1, 5] == 0.25 and shifted[0][:1].abs().sum() == 0 and shifted[0][:, 8:].abs().sum() == 0


def test_finish_proposals_boxes_are_mask_bounding_boxes():
    from torchvision.ops import masks_to_boxes

    probs = torch.zeros(3, 4, 4)
    probs[0, 1:3, 1:3] = 1.0
    probs[1, :, :2] = 0.9
    windows = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 4.0, 24.0, 20.0], [0.0, 0.0, 16.0, 16.0]])
    out = finish_proposals(probs, windows, torch.tensor([0.2, 0.7, 0.9]), (20, 30), mask_threshold=0.5, nms_iou=None)
    assert len(out["masks"]) == 2  # the empty third mask is dropped
    assert out["scores"].tolist() == pytest.approx([0.7, 0.2])  # best first
    torch.testing.assert_close(out["boxes"], masks_to_boxes(out["masks"]) + torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_loss_is_eq_1_by_hand():
    torch.manual_seed(0)
    mask_logits, score = torch.randn(3, 4, 4), torch.randn(3)
    masks = (torch.rand(3, 4, 4) > 0.5).float()
    labels = torch.tensor([1.0, 0.0, 1.0])
    out = deepmask_loss(mask_logits, score, masks, labels, score_weight=1 / 32)
    y = 2 * labels - 1  # {+1, -1}
    m = 2 * masks - 1
    seg = sum((1 + y[k]) / (2 * 16) * torch.log1p(torch.exp(-m[k] * mask_logits[k])).sum() for k in range(3))
    sc = sum(torch.log1p(torch.exp(-y[k] * score[k])) for k in range(3))
    torch.testing.assert_close(out["loss"], (seg + sc / 32) / 3)
    masks2 = masks.clone()
    masks2[1] = 1 - masks2[1]  # a negative patch's mask is never used
    torch.testing.assert_close(deepmask_loss(mask_logits, score, masks2, labels, score_weight=1 / 32)["loss"],
                               out["loss"])
    up = deepmask_loss(mask_logits, score, F.interpolate(masks[:, None], scale_factor=2.0)[:, 0], labels,
                       score_weight=1 / 32)  # targets at 8x8: logits upsampled bilinearly to them
    assert math.isfinite(float(up["loss"]))


def test_vgg_trunk_is_vgg_a_without_the_last_pool():
    trunk = VGGTrunk()
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    pools = [m for m in trunk.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(convs) == 8 and len(pools) == 4  # VGG-A's 8 convolutions; pool5 removed: stride 16
    out = list(VGGTrunk(widths=(4, 4, 8, 8, 8)).forward(torch.rand(1, 3, 224, 224)).values())
    assert out[-1].shape == (1, 8, 14, 14)


def test_tiny_fit_and_test_through_the_cli(cli, tiny_fit):
    tiny_fit("deepmask", into=cli.runs)  # the session's shared fit (conftest.py)
    run = cli.runs / "deepmask" / "tiny" / "v0"
    assert (run / "proposals_val.png").is_file()
    proc = cli("test", "--config", "configs/deepmask/tiny.yaml", "--wandb", "false",
               "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert "test/segm_AR10" in proc.stdout and "test/box_AR50" in proc.stdout
    metrics = (cli.runs / "deepmask" / "tiny" / "v1" / "csv" / "metrics.csv").read_text()
    for key in ("test/segm_AR50_n", "test/segm_AR50_ci95", "test/box_AR10_small", "test/seconds_per_image"):
        assert key in metrics
