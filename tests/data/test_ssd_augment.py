"""SSD's augmentation (Liu et al. 2016, sec. 2.2 / 3.6): the crop and the expansion checked against the pixels they
move (a coordinate-coded image tells where each output pixel came from), and the VOC DataModule's SSD option on the
real VOC sample (the default behaviour unchanged)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_papers.data.ssd_augment import IMAGENET_MEAN_PIXEL, SSDAugment, expand, iou_crop
from lit_papers.data.voc import VOCDataModule


def _coded(h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 with pixel (y, x) = (x, y, 7): an output pixel names its source."""
    ys, xs = np.mgrid[:h, :w]
    return np.stack([xs, ys, np.full_like(xs, 7)], axis=-1).astype(np.uint8)


BOXES = np.array([[10, 20, 60, 90], [100, 30, 180, 70], [150, 150, 190, 195]], np.float32)
LABELS = np.array([1, 2, 3])


@pytest.mark.parametrize("seed", range(40))
def test_crop_keeps_objects_whose_centre_is_inside_clipped_and_shifted(seed):
    image = _coded(200, 200)
    out, boxes, labels = iou_crop(image, BOXES, LABELS, np.random.default_rng(seed), min_scale=0.3)
    x0, y0 = int(out[0, 0, 0]), int(out[0, 0, 1])  # where the patch starts in the original
    assert np.array_equal(out, image[y0:y0 + out.shape[0], x0:x0 + out.shape[1]])
    x1, y1 = x0 + out.shape[1], y0 + out.shape[0]
    centres = (BOXES[:, :2] + BOXES[:, 2:]) / 2
    inside = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0) & (centres[:, 1] < y1)
    if out.shape == image.shape:  # the whole image (one of the seven choices, or 50 failed trials)
        assert np.array_equal(boxes, BOXES)
        return
    assert labels.tolist() == LABELS[inside].tolist() and len(labels) >= 1
    expected = np.clip(BOXES[inside], [x0, y0, x0, y0], [x1, y1, x1, y1]) - [x0, y0, x0, y0]
    np.testing.assert_allclose(boxes, expected)
    # sides scale * sqrt(a) and scale / sqrt(a) of the image, scale >= 0.3, a in [1/2, 2]: area >= (0.3 * 200)^2
    assert min(out.shape[:2]) >= 0.3 / np.sqrt(2) * 200 - 1 and out.shape[0] * out.shape[1] >= 0.9 * (0.3 * 200) ** 2


def test_crop_choices_cover_whole_image_and_patches():
    shapes = {iou_crop(_coded(200, 200), BOXES, LABELS, np.random.default_rng(s))[0].shape for s in range(40)}
    assert (200, 200, 3) in shapes and len(shapes) > 10


def test_expand_places_the_image_on_a_mean_canvas():
    image = _coded(50, 80)
    canvas, boxes = expand(image, BOXES[:1] / 4, np.random.default_rng(0), max_ratio=4.0)
    h, w = canvas.shape[:2]
    assert 50 <= h <= 200 and 80 <= w <= 320 and abs(h / 50 - w / 80) < 0.05
    ys, xs = np.nonzero(canvas[..., 2] == 7)
    top, left = ys.min(), xs.min()
    assert np.array_equal(canvas[top:top + 50, left:left + 80], image)
    assert canvas[0, 0].tolist() == [round(v) for v in IMAGENET_MEAN_PIXEL] or (top, left) == (0, 0)
    np.testing.assert_allclose(boxes, BOXES[:1] / 4 + [left, top, left, top])


def test_full_pipeline_warps_to_the_fixed_size_and_keeps_boxes_inside():
    aug = SSDAugment(size=64, photometric=True, expand_ratio=4.0, crop=True)
    for seed in range(10):
        image, target = aug(_coded(200, 240), {"boxes": BOXES, "labels": LABELS}, seed)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert ((target["boxes"] >= 0) & (target["boxes"] <= 64)).all()
        assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
    a, _ = aug(_coded(200, 240), {"boxes": BOXES, "labels": LABELS}, 3)
    b, _ = aug(_coded(200, 240), {"boxes": BOXES, "labels": LABELS}, 3)
    assert np.array_equal(a, b)  # a pure function of the sample seed
    with pytest.raises(ValueError, match="expand_ratio"):
        SSDAugment(size=64, expand_ratio=0.5)


def test_voc_datamodule_ssd_option_on_the_real_sample(shared_data):
    dm = VOCDataModule(root=str(shared_data), train_splits=["2007_trainval"], test_splits=["2007_test"],
                       fixed_size=300, photometric=True, iou_crop=True, batch_size=2, num_workers=0)
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert all(i.shape == (3, 300, 300) for i in images)
    image, target = dm.datasets["test"][0]  # 000001.jpg, 353x500: warped, boxes scaled with it
    assert image.shape == (3, 300, 300) and target["orig_size"] == (500, 353)
    torch.testing.assert_close(target["boxes"][0], torch.tensor([47 * 300 / 353, 239 * 300 / 500, 195 * 300 / 353,
                                                                 371 * 300 / 500]))
    with pytest.raises(ValueError, match="fixed_size"):
        VOCDataModule(root=str(shared_data), photometric=True)
