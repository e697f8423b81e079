"""A grid picture of generated samples after every validation (and test): ``<run folder>/samples_<stage>.png``,
plus ``<run folder>/samples/<stage>_step<global step>.png`` when ``keep_history`` (so the run shows how samples
evolved), logged to W&B (``<stage>/samples``) when a logger that takes images is present.

Contract with the LightningModule (any generative model: GAN, PixelCNN, ...)::

    pl_module.sample_images(n: int) -> tuple[Tensor (N, 3, H, W) float in [0, 1], Tensor (N,) int labels | None]

The callback calls it under ``torch.no_grad()`` on global rank zero only (so it must not run collective
operations); train/eval mode is the module's business (it knows whether its generator's normalisation should use
batch statistics). With labels (class-conditional samples) the tiles are ordered by label (stable), so a grid of
``nrow`` samples per class shows one class per row; the W&B caption names the classes from
``trainer.datamodule.class_names`` when there are any.

Bad output (wrong rank, channels, a label count that differs from N, values outside [0, 1] or not finite) raises
a ``ValueError`` naming the module class and what to fix; nothing is written then. Files are written atomically
(temporary file, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from torchvision.io import write_png
from torchvision.utils import make_grid


def check_samples(images: torch.Tensor, labels: torch.Tensor | None, n: int, where: str) -> None:
    """Raise ``ValueError`` (naming ``where``) unless images is (n, 1|3, H, W) finite in [0, 1] and labels is
    None or (n,) integers."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{where}.sample_images returned images of shape {shape}; expected (N, 3, H, W) "
                         f"(or (N, 1, H, W)) float in [0, 1]")
    if images.shape[0] != n:
        raise ValueError(f"{where}.sample_images({n}) returned {images.shape[0]} images; return exactly n")
    if not torch.isfinite(images).all():
        raise ValueError(f"{where}.sample_images returned non-finite pixel values (NaN/inf): the generator diverged")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"{where}.sample_images returned values in [{lo:.3g}, {hi:.3g}]; map them to [0, 1] "
                         f"(e.g. (x + 1) / 2 for a tanh output) before returning")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != (n,) or labels.is_floating_point():
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"{where}.sample_images returned labels of shape {shape}; expected an integer "
                             f"tensor of shape ({n},) or None")


def sample_grid(images: torch.Tensor, labels: torch.Tensor | None = None, *, nrow: int = 8, upscale: int = 1,
                padding: int = 2) -> torch.Tensor:
    """(N, C, H, W) float [0, 1] (+ optional (N,) labels: tiles ordered by label, stable) -> (3, H', W') uint8
    grid, ``nrow`` tiles per row, ``padding`` white pixels between tiles, each tile upscaled ``upscale`` x
    (nearest)."""
    images = images.detach().float().cpu()
    if labels is not None:
        order = torch.sort(labels.detach().cpu(), stable=True).indices
        images = images[order]
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)  # (N, 3, H, W) grey
    if upscale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=upscale, mode="nearest")
    grid = make_grid(images, nrow=nrow, padding=padding, pad_value=1.0)  # (3, H', W') float [0, 1]
    return (grid * 255).round().clamp(0, 255).to(torch.uint8)


class SampleGrid(L.Callback):
    """Draws ``num_samples`` samples of ``pl_module.sample_images`` after each validation / test (not during the
    sanity check), ``nrow`` per row."""

    def __init__(self, *, num_samples: int = 64, nrow: int = 8, upscale: int = 1, keep_history: bool = True,
                 on_test: bool = True) -> None:
        if num_samples < 1 or nrow < 1 or upscale < 1:
            raise ValueError(f"SampleGrid: num_samples ({num_samples}), nrow ({nrow}) and upscale ({upscale}) "
                             f"must be >= 1")
        self.num_samples = num_samples
        self.nrow = nrow
        self.upscale = upscale
        self.keep_history = keep_history
        self.on_test = on_test
        self.last_path: Path | None = None

    @staticmethod
    def _write(grid: torch.Tensor, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        write_png(grid, str(tmp))
        os.replace(tmp, path)

    def draw(self, trainer, pl_module, stage: str) -> Path | None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return None
        where = type(pl_module).__name__
        if not callable(getattr(pl_module, "sample_images", None)):
            raise ValueError(f"SampleGrid: {where} has no sample_images(n) method; add one returning "
                             f"(images (N, 3, H, W) in [0, 1], labels (N,) or None) or remove the callback")
        with torch.no_grad():
            images, labels = pl_module.sample_images(self.num_samples)
        check_samples(images, labels, self.num_samples, where)
        grid = sample_grid(images, labels, nrow=self.nrow, upscale=self.upscale)
        root = Path(trainer.default_root_dir)
        path = root / f"samples_{stage}.png"
        self._write(grid, path)
        if self.keep_history:
            self._write(grid, root / "samples" / f"{stage}_step{trainer.global_step:07d}.png")
        self.last_path = path
        print(f"[{stage}] sample grid: {path}")
        caption = None
        if labels is not None:
            names = list(getattr(trainer.datamodule, "class_names", None) or []) if trainer.datamodule else []
            ordered = torch.sort(labels.detach().cpu(), stable=True).values.tolist()
            caption = " ".join(names[k] if 0 <= k < len(names) else str(k) for k in ordered)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                kwargs = {"caption": [caption]} if caption is not None else {}
                logger.log_image(key=f"{stage}/samples", images=[grid.permute(1, 2, 0).numpy()],
                                 step=trainer.global_step, **kwargs)
        return path

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.draw(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self.on_test:
            self.draw(trainer, pl_module, "test")
