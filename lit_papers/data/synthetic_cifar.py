"""A generated 10-class image set written in the official CIFAR-10 pickle format.

It lets the README's first command train ResNet end to end on a fresh machine with no download, through the
very same reader as the real data. Each class is a shape (filled disc, ring, square, square outline,
triangle, horizontal bars, vertical bars, plus sign, diagonal stripes, checkerboard) of random colour, size
and position over a random colour gradient with pixel noise. Deterministic for a given seed.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np

from lit_papers.data.cifar import CIFARDataModule
from lit_papers.data.root import generated_dir

CLASSES = ("disc", "ring", "square", "outline", "triangle", "hbars", "vbars", "plus", "diagonal", "checker")
FOLDER = "synthetic-cifar-10-batches-py"


def _shape_mask(kind: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(6, 12)
    cx, cy = rng.uniform(r, size - r, size=2)
    dx, dy = xx - cx, yy - cy
    inside_box = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    name = CLASSES[kind]
    if name == "disc":
        return dx**2 + dy**2 <= r**2
    if name == "ring":
        d = np.sqrt(dx**2 + dy**2)
        return (d <= r) & (d >= r * 0.6)
    if name == "square":
        return inside_box
    if name == "outline":
        return inside_box & ((np.abs(dx) >= r * 0.65) | (np.abs(dy) >= r * 0.65))
    if name == "triangle":
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    if name == "hbars":
        return inside_box & (np.floor((dy + r) / (r / 2.5)) % 2 == 0)
    if name == "vbars":
        return inside_box & (np.floor((dx + r) / (r / 2.5)) % 2 == 0)
    if name == "plus":
        return inside_box & ((np.abs(dx) <= r * 0.3) | (np.abs(dy) <= r * 0.3))
    if name == "diagonal":
        return inside_box & (np.floor((dx + dy) / (r / 2)) % 2 == 0)
    return inside_box & ((np.floor((dx + r) / (r / 2)) + np.floor((dy + r) / (r / 2))) % 2 == 0)  # checker


def render(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One (32, 32, 3) uint8 image of class ``kind``."""
    t = np.linspace(0, 1, 32, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]  # (32, 32)
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    image = c0 + (c1 - c0) * ramp[..., None] * 0.5  # (32, 32, 3)
    colour = rng.uniform(0, 255, size=3)
    while np.abs(colour - image.mean(axis=(0, 1))).max() < 80:  # keep the shape visible against the background
        colour = rng.uniform(0, 255, size=3)
    image[_shape_mask(kind, rng)] = colour
    image += rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _batch(n: int, rng: np.random.Generator, label: str) -> dict:
    labels = rng.integers(0, len(CLASSES), size=n)
    images = np.stack([render(int(k), rng) for k in labels])  # (n, 32, 32, 3)
    data = images.transpose(0, 3, 1, 2).reshape(n, 3072)  # official row layout: R plane, G plane, B plane
    return {"batch_label": label, "labels": labels.tolist(), "data": data,
            "filenames": [f"synthetic_{i:06d}.png" for i in range(n)]}


def write_synthetic_cifar(folder: str | os.PathLike, *, per_batch: int = 2000, test_size: int = 2000,
                          seed: int = 0) -> Path:
    """Write ``data_batch_1..5``, ``test_batch``, ``batches.meta`` into ``folder`` (atomically, as a whole)."""
    folder = Path(folder)
    if (folder / "batches.meta").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=folder.parent))
    try:
        rng = np.random.default_rng(seed)
        for i in range(1, 6):
            with open(scratch / f"data_batch_{i}", "wb") as fh:
                pickle.dump(_batch(per_batch, rng, f"training batch {i} of 5"), fh, protocol=2)
        with open(scratch / "test_batch", "wb") as fh:
            pickle.dump(_batch(test_size, rng, "testing batch 1 of 1"), fh, protocol=2)
        with open(scratch / "batches.meta", "wb") as fh:
            pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": per_batch, "num_vis": 3072}, fh, protocol=2)
        try:
            os.replace(scratch, folder)
        except OSError:  # another process (a DDP rank, a parallel test worker) finished first: keep theirs
            if not (folder / "batches.meta").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


class SyntheticCIFARDataModule(CIFARDataModule):
    """:class:`CIFARDataModule` over generated shapes, written once under ``$LIT_PAPERS_CACHE/generated/cifar/``
    (``<root>/cifar/`` when ``root`` is given), never into the data root (issue 17.15)."""

    def __init__(self, *, per_batch: int = 2000, test_size: int = 2000, generator_seed: int = 0,
                 root: str | None = None, val_size: int | float = 1000, **kwargs) -> None:
        super().__init__(dataset="cifar10", root=root, val_size=val_size, download=False, **kwargs)
        self.folder = generated_dir("cifar", root) / FOLDER
        self.per_batch, self.test_size, self.generator_seed = per_batch, test_size, generator_seed

    def prepare_data(self) -> None:
        write_synthetic_cifar(self.folder, per_batch=self.per_batch, test_size=self.test_size, seed=self.generator_seed)
