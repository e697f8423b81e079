"""Image / ground truth / prediction strips for semantic segmentation (PIL), one row per image, labels coloured
with the VOC colour map (void 255 in VOC's cream). :class:`SegmentationPictures` writes
``<run folder>/segmentation_<stage>.png`` after validation / test from ``pl_module.example_predictions``
(``{"images": (N, 3, H, W) [0, 1], "targets": (N, H, W), "preds": (N, H, W)}``, set by :class:`FCNLitModule`)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

from lit_papers.data.voc import voc_colormap

PALETTE = voc_colormap()  # (256, 3) uint8, void 255 -> (224, 224, 192)


def segmentation_strips(images: torch.Tensor, targets: torch.Tensor, preds: torch.Tensor, *, gap: int = 2
                        ) -> Image.Image:
    """(N, 3, H, W) float [0, 1], (N, H, W) and (N, H, W) class indices -> an RGB picture with N rows of
    [image | ground truth | prediction], ``gap`` white pixels between panels."""
    n, _, h, w = images.shape
    canvas = np.full((n * h + (n - 1) * gap, 3 * w + 2 * gap, 3), 255, np.uint8)
    for i in range(n):
        rgb = (images[i].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        panels = [rgb, PALETTE[targets[i].cpu().numpy().astype(np.uint8)], PALETTE[preds[i].cpu().numpy().astype(np.uint8)]]
        for j, panel in enumerate(panels):
            canvas[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = panel
    return Image.fromarray(canvas)


class SegmentationPictures(L.Callback):
    """Writes the strips of the module's ``example_predictions`` to the run folder (rank zero, atomically) and
    logs them to loggers that take images (W&B: ``<stage>/segmentation``)."""

    def _write(self, trainer, pl_module, stage: str) -> None:
        ex = getattr(pl_module, "example_predictions", None)
        if trainer.sanity_checking or not trainer.is_global_zero or not ex:
            return
        picture = segmentation_strips(ex["images"], ex["targets"], ex["preds"])
        path = Path(trainer.default_root_dir) / f"segmentation_{stage}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        picture.save(tmp)
        os.replace(tmp, path)
        print(f"[{stage}] segmentation picture: {path}")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"{stage}/segmentation", images=[np.asarray(picture)], step=trainer.global_step)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module, "test")
