"""SSD's training-time data augmentation (Liu et al. 2016, sec. 2.2 "Data augmentation", sec. 3.6), as a
detection transform of :class:`~lit_papers.data.voc.VOCDetection` (``VOCDataModule(fixed_size=..., photometric=...,
expand_ratio=..., iou_crop=...)``).

Order (the released code's, unchecked): photometric distortions -> expansion ("zoom out", sec. 3.6) ->
IoU-constrained random crop -> horizontal flip (p 0.5) -> warp to ``size`` x ``size`` (SSD300's fixed input; the
aspect ratio is not kept). Works on HWC uint8 images and xyxy pixel-corner boxes (the dataset's convention).

* Photometric (albumentations): brightness delta 32/255, contrast [0.5, 1.5], saturation [0.5, 1.5], hue 18
  degrees, each with probability 0.5 (the distortion parameters of the released code, sec. 2.2 cites Howard 2013;
  values unchecked).
* Expansion (own code: albumentations has no "place the image at a random spot of a larger mean-filled canvas"):
  with probability ``expand_prob`` the image goes at a random place of a canvas ``r`` times its sides, r uniform in
  [1, ``expand_ratio``] ("a canvas of 16x of the original image size", i.e. up to 4x per side), filled with the mean
  pixel.
* Random crop (own code: albumentations' bbox-safe crops keep every box, SSD's does not): one of {the whole
  image; a patch whose IoU with some object is >= 0.1, 0.3, 0.5, 0.7 or 0.9; any patch}, picked uniformly;
  patch sides ``scale * sqrt(a)`` and ``scale / sqrt(a)`` of the image's, scale in [``min_scale``, 1] and aspect a
  in [1/2, 2]; up to 50 trials, else the whole image. Objects whose centre is in the patch are kept, clipped to it.
"""

from __future__ import annotations

import albumentations as A
import numpy as np

MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9, 0.0)  # None = the whole image; 0.0 = any patch
IMAGENET_MEAN_PIXEL = (123.675, 116.28, 103.53)  # RGB, 0-255


def photometric_distortions() -> A.Compose:
    """Image-only colour distortions, each applied with probability 0.5."""
    return A.Compose([
        A.RandomBrightnessContrast(brightness_limit=(-32 / 255, 32 / 255), contrast_limit=(0.0, 0.0), p=0.5),
        A.RandomBrightnessContrast(brightness_limit=(0.0, 0.0), contrast_limit=(-0.5, 0.5), p=0.5),
        A.ColorJitter(brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(0.5, 1.5), hue=(0.0, 0.0), p=0.5),
        A.ColorJitter(brightness=(1.0, 1.0), contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=(-0.05, 0.05), p=0.5),
    ])


def expand(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, *, max_ratio: float,
           fill: tuple[float, float, float] = IMAGENET_MEAN_PIXEL) -> tuple[np.ndarray, np.ndarray]:
    """Zoom out: (H, W, 3) uint8, (N, 4) xyxy -> the image on a (rH, rW) mean-filled canvas at a random offset,
    boxes shifted with it; r uniform in [1, max_ratio]."""
    h, w = image.shape[:2]
    ratio = rng.uniform(1.0, max_ratio)
    ch, cw = int(h * ratio), int(w * ratio)
    top, left = int(rng.uniform(0, ch - h)), int(rng.uniform(0, cw - w))
    canvas = np.empty((ch, cw, 3), np.uint8)
    canvas[:] = np.asarray(fill, np.float64).round().astype(np.uint8)
    canvas[top:top + h, left:left + w] = image
    return canvas, boxes + np.array([left, top, left, top], np.float32)


def _iou(patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(4,) and (N, 4) xyxy -> (N,) IoU."""
    lt, rb = np.maximum(patch[:2], boxes[:, :2]), np.minimum(patch[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(patch) + area(boxes) - inter)


def iou_crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator, *,
             min_scale: float = 0.3, max_trials: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SSD's random patch (module docstring): (H, W, 3), (N, 4) xyxy, (N,) -> the cropped image and the kept,
    clipped, shifted boxes and their labels. Images without boxes are returned unchanged."""
    h, w = image.shape[:2]
    min_iou = MIN_IOUS[int(rng.integers(len(MIN_IOUS)))]
    if min_iou is None or len(boxes) == 0:
        return image, boxes, labels
    for _ in range(max_trials):
        scale = rng.uniform(min_scale, 1.0)
        aspect = rng.uniform(max(0.5, scale ** 2), min(2.0, 1 / scale ** 2))  # keeps both sides <= 1
        pw, ph = scale * np.sqrt(aspect) * w, scale / np.sqrt(aspect) * h
        x0, y0 = rng.uniform(0, w - pw), rng.uniform(0, h - ph)
        patch = np.array([x0, y0, x0 + pw, y0 + ph], np.float32)
        if _iou(patch, boxes).max() < min_iou:  # some object must overlap the patch enough
            continue
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = (centres >= patch[:2]).all(axis=1) & (centres < patch[2:]).all(axis=1)
        if not keep.any():
            continue
        px0, py0, px1, py1 = int(patch[0]), int(patch[1]), int(np.ceil(patch[2])), int(np.ceil(patch[3]))
        kept = boxes[keep].copy()
        kept[:, :2] = np.maximum(kept[:, :2], [px0, py0])
        kept[:, 2:] = np.minimum(kept[:, 2:], [px1, py1])
        return image[py0:py1, px0:px1], kept - np.array([px0, py0, px0, py0], np.float32), labels[keep]
    return image, boxes, labels


class SSDAugment:
    """The whole training pipeline (module docstring); ``photometric`` / ``expand_ratio`` (1 = no expansion) /
    ``crop`` switch its stages (the paper's Table 2 ablation turns the sampling off; sec. 3.6 adds expansion).
    ``__call__(image, target, seed)`` -> (image (size, size, 3) uint8, target with ``boxes`` / ``labels``)."""

    def __init__(self, *, size: int, photometric: bool = True, expand_ratio: float = 1.0, expand_prob: float = 0.5,
                 crop: bool = True, crop_min_scale: float = 0.3, hflip: float = 0.5) -> None:
        if expand_ratio < 1.0:
            raise ValueError(f"expand_ratio must be >= 1 (1 = no expansion), got {expand_ratio}")
        self.photometric = photometric_distortions() if photometric else None
        self.expand_ratio, self.expand_prob = expand_ratio, expand_prob
        self.crop, self.crop_min_scale = crop, crop_min_scale
        self.geometric = A.Compose([A.HorizontalFlip(p=hflip), A.Resize(size, size)],
                                   bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                            min_area=1.0, clip=True))

    def __call__(self, image: np.ndarray, target: dict[str, np.ndarray], seed: int | None = None
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rng = np.random.default_rng(seed)
        boxes, labels = target["boxes"].astype(np.float32).reshape(-1, 4), target["labels"]
        if self.photometric is not None:
            self.photometric.set_random_seed(int(rng.integers(2**31)))
            image = self.photometric(image=image)["image"]
        if self.expand_ratio > 1.0 and rng.uniform() < self.expand_prob:
            image, boxes = expand(image, boxes, rng, max_ratio=self.expand_ratio)
        if self.crop:
            image, boxes, labels = iou_crop(image, boxes, labels, rng, min_scale=self.crop_min_scale)
        self.geometric.set_random_seed(int(rng.integers(2**31)))
        out = self.geometric(image=np.ascontiguousarray(image), bboxes=boxes, labels=labels)
        return out["image"], {"boxes": np.asarray(out["bboxes"], np.float32).reshape(-1, 4),
                              "labels": np.asarray(out["labels"], np.int64).reshape(-1)}
