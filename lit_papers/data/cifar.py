"""CIFAR-10 / CIFAR-100 from the official python pickle batches (Krizhevsky 2009).

The pickles are parsed directly (torchvision's class md5-checks whole files and rejects subsets such as
the 500-per-batch real sample used by the tests). Images are uint8 HWC in memory; the datamodule yields
float CHW tensors, normalised as configured, with labels int64.

Split (He et al. 2016, sec. 4.2): 45k train / 5k val carved from the 50k training images by a seeded
permutation; ``val_size`` may be an int (images) or a float (fraction) for subsets.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lit_papers.data.base import ShardedDataModule
from lit_papers.data.download import DatasetError, DatasetMissingError, Remote, extract, fetch
from lit_papers.data.root import family_dir


@dataclass(frozen=True)
class CIFARSpec:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    remote: Remote


CIFAR_SPECS = {
    "cifar10": CIFARSpec(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        remote=Remote(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            filename="cifar-10-python.tar.gz",
            md5="c58f30108f718f92721af3b95e74349a",
            size=170498071,
        ),
    ),
    "cifar100": CIFARSpec(
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        remote=Remote(
            url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            filename="cifar-100-python.tar.gz",
            md5="eb9058c3a382ffc7106e4002c42a8d85",
            size=169001437,
        ),
    ),
}

# Per-channel statistics of the CIFAR-10 training set (images in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def read_cifar_pickle(path: str | os.PathLike, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file -> (images uint8 (N, 32, 32, 3), labels int64 (N,)).

    Raises :class:`DatasetError` naming the file for a truncated/corrupt pickle or unexpected content.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated pickles raise EOFError/UnpicklingError/ValueError/...
        raise DatasetError(
            f"{path}: truncated or corrupt CIFAR pickle ({type(exc).__name__}: {exc}). "
            "Delete the folder and run again to re-download, or restore the file from the official archive."
        ) from exc
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(f"{path}: not a CIFAR batch (expected keys 'data' and {label_key!r}, found {keys})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DatasetError(
            f"{path}: malformed CIFAR batch: data {data.dtype} {data.shape}, {len(labels)} labels "
            "(expected uint8 (N, 3072) and N labels)"
        )
    # each row: 1024 R, 1024 G, 1024 B, each a row-major 32x32 plane
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3) HWC
    return np.ascontiguousarray(images), labels


def load_cifar(folder: str | os.PathLike, dataset: str = "cifar10") -> dict:
    """Read a whole CIFAR folder: {'train': (x, y), 'test': (x, y), 'classes': [...]}."""
    spec = CIFAR_SPECS[dataset]
    folder = Path(folder)
    out = {}
    for split, files in (("train", spec.train_files), ("test", spec.test_files)):
        parts = [read_cifar_pickle(folder / name, spec.label_key) for name in files]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    with open(folder / spec.meta_file, "rb") as fh:
        out["classes"] = list(pickle.load(fh, encoding="latin1")[spec.names_key])
    return out


class CIFARImages(Dataset):
    """In-memory CIFAR images -> (float CHW tensor, int64 label).

    Indices may be plain ints or ``(index, seed)`` pairs from :class:`ShardSampler`; with a seed the random
    augmentation is reseeded per sample, so it is reproducible across workers and resumes.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, mean: np.ndarray, std: np.ndarray,
                 augment: bool) -> None:
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.mean = mean.astype(np.float32)  # (32, 32, 3) per-pixel or (3,) per-channel, in [0, 1] units
        self.std = std.astype(np.float32)
        # Augmentation of He et al. 2016 sec. 4.2: pad 4 (zeros after normalisation = the mean), random
        # 32x32 crop, horizontal flip.
        self.augment = (
            A.Compose([
                A.PadIfNeeded(40, 40, border_mode=cv2.BORDER_CONSTANT, fill=0),
                A.RandomCrop(32, 32),
                A.HorizontalFlip(p=0.5),
            ])
            if augment
            else None
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        image = (self.images[index].astype(np.float32) / 255.0 - self.mean) / self.std  # (32, 32, 3)
        if self.augment is not None:
            if seed is not None:
                self.augment.set_random_seed(seed)
            image = self.augment(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), self.labels[index]


class CIFARDataModule(ShardedDataModule):
    """CIFAR-10/100 from the official pickles under ``<root>/cifar`` (``root`` defaults to LIT_PAPERS_DATA).

    Args:
        dataset: ``cifar10`` or ``cifar100``.
        root: data root (the folder holding ``cifar/``); default ``$LIT_PAPERS_DATA``.
        val_size: images held out of the training batches for validation (int) or a fraction (float);
            5000 = the 45k/5k split of He et al. 2016.
        normalization: ``per_pixel_mean`` (He et al.: subtract the per-pixel mean of the training split)
            or ``channel`` (per-channel mean/std of the training split).
        augment: pad-4 random crop + horizontal flip on the training split.
        seed: seed of the training order and augmentation (default: the run's ``seed_everything``).
        download: fetch the official archive when the folder is missing (``prepare_data``).
    """

    def __init__(
        self,
        *,
        dataset: Literal["cifar10", "cifar100"] = "cifar10",
        root: str | None = None,
        val_size: int | float = 5000,
        split_seed: int = 0,
        normalization: Literal["per_pixel_mean", "channel"] = "per_pixel_mean",
        augment: bool = True,
        batch_size: int = 128,
        eval_batch_size: int = 500,
        num_workers: int = 2,
        seed: int | None = None,
        download: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.dataset, self.val_size, self.split_seed = dataset, val_size, split_seed
        self.normalization, self.augment, self.download = normalization, augment, download
        self.eval_batch_size = eval_batch_size
        self.spec = CIFAR_SPECS[dataset]
        self.folder = family_dir("cifar", root) / self.spec.folder
        self.num_classes = self.spec.num_classes
        self.classes: list[str] = []

    def _missing(self) -> list[str]:
        needed = [*self.spec.train_files, *self.spec.test_files, self.spec.meta_file]
        return [name for name in needed if not (self.folder / name).is_file()]

    def prepare_data(self) -> None:
        if not self._missing():
            return
        if not self.download:
            raise DatasetMissingError(
                f"{self.folder}: missing {', '.join(self._missing())}. Download {self.spec.remote.url} and extract "
                f"it into {self.folder.parent}, or set download=true."
            )
        archive = fetch(self.spec.remote, self.folder.parent, family="cifar",
                        expected=[f"{self.spec.folder}/{n}" for n in self._missing()])
        extract(archive, self.folder.parent, member_root=self.spec.folder)

    def setup(self, stage: str | None = None) -> None:
        if self.classes:
            return
        if missing := self._missing():
            raise DatasetMissingError(f"{self.folder}: missing {', '.join(missing)} (run prepare_data / download)")
        data = load_cifar(self.folder, self.dataset)
        self.classes = data["classes"]
        x, y = data["train"]
        n_val = self.val_size
        n_val = int(round(n_val * len(x))) if isinstance(n_val, float) else int(n_val)
        if not 0 <= n_val < len(x):
            raise ValueError(f"val_size={self.val_size} leaves no training images out of {len(x)} in {self.folder}")
        order = np.random.default_rng(self.split_seed).permutation(len(x))
        train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
        x_train = x[train_idx]
        if self.normalization == "per_pixel_mean":
            mean = x_train.astype(np.float64).mean(axis=0) / 255.0  # (32, 32, 3)
            std = np.ones(3)
        else:
            flat = x_train.reshape(-1, 3).astype(np.float64) / 255.0
            mean, std = flat.mean(axis=0), flat.std(axis=0)
        self.mean, self.std = mean, std
        common = dict(mean=mean, std=std)
        self.train_set = CIFARImages(x_train, y[train_idx], augment=self.augment, **common)
        self.val_set = CIFARImages(x[val_idx], y[val_idx], augment=False, **common)
        self.test_set = CIFARImages(*data["test"], augment=False, **common)

    def train_dataloader(self):
        return self.train_loader(self.train_set)

    def val_dataloader(self):
        return self.eval_loader(self.val_set, batch_size=self.eval_batch_size)

    def test_dataloader(self):
        return self.eval_loader(self.test_set, batch_size=self.eval_batch_size)

    def predict_dataloader(self):
        return self.test_dataloader()
