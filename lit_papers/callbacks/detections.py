"""A picture of predictions after validation/test: each image with its masks, boxes, class names and scores,
saved as ``<run folder>/predictions_<stage>.png`` and logged to W&B (``<stage>/predictions``).

Reads ``pl_module.example_predictions`` = ``{"items": [{"image": (3, H, W) float [0, 1], "boxes": (N, 4) xyxy,
"labels": (N,) 1..K, "scores": (N,), "masks": optional (N, H, W) probabilities}]}`` (set by the detection
LitModule) and ``trainer.datamodule.class_names``. After each evaluation batch the callback takes the items the
module published and sets ``example_predictions`` back to ``None`` (the module publishes the next batch's when it
finds ``None``), until it holds ``max_images``: the picture shows ``max_images`` images whatever the evaluation
batch size. Drawing uses ``torchvision.utils``.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe",
           "#008080", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075", "#808080"]


def draw_predictions(items: list[dict], class_names: list[str], *, score_thresh: float = 0.5, upscale: int = 2,
                     mask_thresh: float = 0.5) -> torch.Tensor:
    """A (3, H, W) uint8 grid of images with their predictions above ``score_thresh``."""
    tiles = []
    for item in items:
        image = (item["image"].clamp(0, 1) * 255).to(torch.uint8)  # (3, H, W)
        keep = item["scores"] >= score_thresh
        boxes, labels, scores = item["boxes"][keep], item["labels"][keep], item["scores"][keep]
        if upscale > 1:
            image = torch.nn.functional.interpolate(image[None].float(), scale_factor=upscale, mode="nearest")[0].to(torch.uint8)
            boxes = boxes * upscale
        colors = [PALETTE[int(lab) % len(PALETTE)] for lab in labels]
        if "masks" in item and keep.any():
            masks = item["masks"][keep] >= mask_thresh  # (N, H, W)
            if upscale > 1:
                masks = torch.nn.functional.interpolate(masks[:, None].float(), scale_factor=upscale)[:, 0] > 0.5
            image = draw_segmentation_masks(image, masks, alpha=0.45, colors=colors)
        names = [f"{class_names[int(lab) - 1] if 0 < int(lab) <= len(class_names) else int(lab)} {s:.2f}"
                 for lab, s in zip(labels, scores.tolist())]
        if len(boxes):
            image = draw_bounding_boxes(image, boxes, labels=names, colors=colors, width=2)
        tiles.append(image)
    size = max(t.shape[-2] for t in tiles), max(t.shape[-1] for t in tiles)
    tiles = [torch.nn.functional.pad(t, (0, size[1] - t.shape[-1], 0, size[0] - t.shape[-2])) for t in tiles]
    return make_grid(torch.stack(tiles), nrow=min(4, len(tiles)), padding=4, pad_value=255)


class DetectionPictures(L.Callback):
    def __init__(self, *, max_images: int = 8, score_thresh: float = 0.5) -> None:
        self.max_images = max_images
        self.score_thresh = score_thresh
        self.items: list[dict] = []

    def _collect(self, pl_module) -> None:
        examples = getattr(pl_module, "example_predictions", None)
        if len(self.items) >= self.max_images or not examples:
            return
        self.items.extend(examples.get("items", [])[: self.max_images - len(self.items)])
        pl_module.example_predictions = None  # taken: the module publishes the next batch's

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.items = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(pl_module)

    on_test_batch_end = on_validation_batch_end

    def _draw(self, trainer, pl_module, stage: str) -> None:
        self._collect(pl_module)
        if trainer.sanity_checking or not trainer.is_global_zero or not self.items:
            return
        names = list(getattr(trainer.datamodule, "class_names", []) or [])
        grid = draw_predictions(self.items[: self.max_images], names, score_thresh=self.score_thresh)
        path = Path(trainer.default_root_dir) / f"predictions_{stage}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        write_png(grid, str(tmp))
        os.replace(tmp, path)
        print(f"[{stage}] predictions picture: {path}")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"{stage}/predictions", images=[grid.permute(1, 2, 0).numpy()],
                                 step=trainer.global_step)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._draw(trainer, pl_module, "test")
