"""Top segment proposals on held-out images (PIL): one row per image, one panel per method (e.g. DeepMask vs
SharpMask), each panel the image with its ``top`` best masks overlaid in distinct colours (best first = drawn
last, so on top). :class:`ProposalPictures` writes ``<run folder>/proposals_<stage>.png`` from
``pl_module.example_predictions`` = ``{"images": [(3, H, W) [0, 1]], "panels": {name: [(k, H, W) bool]}}``."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw

COLOURS = np.array([(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240),
                    (245, 130, 48), (240, 50, 230)], dtype=np.float64)


def overlay(image: torch.Tensor, masks: torch.Tensor, *, alpha: float = 0.5) -> np.ndarray:
    """(3, H, W) [0, 1] and (k, H, W) bool -> (H, W, 3) uint8 with mask i tinted in ``COLOURS[i]`` (mask 0 on top)."""
    rgb = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255  # (H, W, 3)
    for i in reversed(range(len(masks))):
        m = masks[i].cpu().numpy().astype(bool)
        rgb[m] = (1 - alpha) * rgb[m] + alpha * COLOURS[i % len(COLOURS)]
    return rgb.round().astype(np.uint8)


def proposal_strips(images: list[torch.Tensor], panels: dict[str, list[torch.Tensor]], *, gap: int = 2,
                    title: int = 12) -> Image.Image:
    """Rows of [image | panel 1 | panel 2 ...], a ``title``-px header naming the panels; images may differ in size
    (each row as tall as its image, columns as wide as the widest)."""
    names = list(panels)
    w = max(im.shape[2] for im in images)
    heights = [im.shape[1] for im in images]
    cols = 1 + len(names)
    canvas = np.full((title + sum(heights) + gap * len(images), cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    y = title
    for r, image in enumerate(images):
        h, wi = image.shape[1:]
        tiles = [overlay(image, torch.zeros((0, h, wi), dtype=torch.bool))]
        tiles += [overlay(image, panels[n][r]) for n in names]
        for c, tile in enumerate(tiles):
            canvas[y:y + h, c * (w + gap): c * (w + gap) + wi] = tile
        y += h + gap
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for c, name in enumerate(["image"] + names):
        draw.text((c * (w + gap) + 2, 0), name, fill=(0, 0, 0))
    return picture


class ProposalPictures(L.Callback):
    """Writes the strips of the module's ``example_predictions`` after validation / test (rank zero, atomically)
    and logs them to loggers that take images (W&B: ``<stage>/proposals``)."""

    def _write(self, trainer, pl_module, stage: str) -> None:
        ex = getattr(pl_module, "example_predictions", None)
        if trainer.sanity_checking or not trainer.is_global_zero or not ex or not ex["images"]:
            return
        picture = proposal_strips(ex["images"], ex["panels"])
        path = Path(trainer.default_root_dir) / f"proposals_{stage}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        picture.save(tmp)
        os.replace(tmp, path)
        print(f"[{stage}] proposal picture: {path}")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"{stage}/proposals", images=[np.asarray(picture)], step=trainer.global_step)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module, "test")
