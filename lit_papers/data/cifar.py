"""CIFAR-10 / CIFAR-100 from the official python pickle batches (Krizhevsky 2009) or a folder of images.

The pickles are parsed directly (torchvision's class md5-checks whole files and rejects subsets such as
the 500-per-batch real sample used by the tests). A folder-of-images copy (``<split>/<class>/*.jpg|png``, e.g.
the full CIFAR-10 as JPEG q75 in ``cifar-10-jpeg``) is read by :mod:`lit_papers.data.image_folder`. Images are
uint8 HWC in memory; the datamodule yields float CHW tensors, normalised as configured, with labels int64.

Split (He et al. 2016, sec. 4.2): 45k train / 5k val carved from the 50k training images by a seeded
permutation; ``val_size`` may be an int (images) or a float (fraction) for subsets. A folder of images is
ordered class by class (file names sorted), so the same seed holds out other records than in the pickle order
(the official record order is not recoverable from such a folder); the sizes and the procedure are the same.

Corruptions (Zhang et al. 2017, "Understanding deep learning requires rethinking generalization", sec. 3) and a
labelled subset (Salimans et al. 2016, semi-supervised) are DataModule options, each a pure function below and
deterministic per example and seed: every random draw for record ``i`` of a split comes from its own generator
``default_rng([corruption_seed, purpose, split, i])`` (``split`` 0 = the training records, 1 = the test records;
``i`` = the record's index in its source, before the train/val split), so a record's corruption does not depend on
``val_size``, ``split_seed``, the data order or which other records are loaded.
"""

from __future__ import annotations

import gzip
import os
import pickle
import sys
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lit_papers.data.base import ShardedDataModule
from lit_papers.data.download import DatasetError, DatasetMissingError, Remote, extract, fetch
from lit_papers.data.image_folder import FolderListing, load_image_folder
from lit_papers.data.images import ImageRef
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

# -- corruptions (Zhang et al. 2017, sec. 3) and the labelled subset ------------------------------------------
ImageCorruption = Literal["none", "shuffled_pixels", "random_pixels", "gaussian"]
UNLABELLED = -1  # the label of a training image whose label is hidden (``labelled_per_class``)
TRAIN_RECORDS, TEST_RECORDS = 0, 1  # the ``split`` of a record's generator
_LABEL_NOISE, _RANDOM_PIXELS, _GAUSSIAN, _SHUFFLED_PIXELS, _LABELLED = 1, 2, 3, 4, 5  # the ``purpose``


def _record_rng(seed: int, purpose: int, split: int, record: int) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, split, int(record)])


def corrupt_labels(labels: np.ndarray, records: np.ndarray, *, p: float, num_classes: int, seed: int,
                   split: int = TRAIN_RECORDS) -> np.ndarray:
    """Zhang et al.'s partially corrupted labels: with probability ``p`` a record's label is replaced by a class
    drawn uniformly from all ``num_classes`` (so it may, by chance, stay the true one: at ``p = 1`` about
    1/num_classes of the labels are still right; the labels are then "completely random", as in the paper).

    Each record ``r`` draws (u_r ~ U[0, 1), c_r ~ U{0..K-1}) once from its own generator and is corrupted iff
    u_r < p: the choice is fixed per example, and the corrupted sets are nested as ``p`` grows (the records
    corrupted at p = 0.2 are corrupted, to the same class, at p = 0.4).

    Args: labels int (N,), records int (N,) the records' indices in their source. Returns int64 (N,), a copy.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"label_noise={p}: a probability in [0, 1] is needed")
    out = np.array(labels, dtype=np.int64, copy=True)
    if p == 0.0:
        return out
    for k, record in enumerate(records):
        rng = _record_rng(seed, _LABEL_NOISE, split, record)
        u, new = rng.random(), int(rng.integers(num_classes))
        if u < p:
            out[k] = new
    return out


def shuffle_pixels(images: np.ndarray, *, seed: int) -> np.ndarray:
    """Zhang et al.'s "shuffled pixels": one permutation of the H*W pixel positions, the same for every image
    (train and test); a pixel's channels move together. Images (N, H, W, C) -> a permuted copy."""
    n, h, w, c = images.shape
    perm = np.random.default_rng([seed, _SHUFFLED_PIXELS]).permutation(h * w)
    return np.ascontiguousarray(images.reshape(n, h * w, c)[:, perm].reshape(n, h, w, c))


def random_pixels(images: np.ndarray, records: np.ndarray, *, seed: int, split: int) -> np.ndarray:
    """Zhang et al.'s "random pixels": each image gets its own permutation of the H*W pixel positions (drawn from
    the record's generator). Images (N, H, W, C) -> a permuted copy."""
    n, h, w, c = images.shape
    flat = images.reshape(n, h * w, c)
    out = np.empty_like(flat)
    for k, record in enumerate(records):
        out[k] = flat[k, _record_rng(seed, _RANDOM_PIXELS, split, record).permutation(h * w)]
    return out.reshape(n, h, w, c)


def gaussian_images(records: np.ndarray, *, mean: np.ndarray, std: np.ndarray, seed: int, split: int,
                    hw: tuple[int, int] = (32, 32)) -> np.ndarray:
    """Zhang et al.'s "Gaussian": every pixel drawn i.i.d. from N(mean_c, std_c^2), the per-channel mean and std of
    the real training images (``mean``, ``std`` (C,) in 0..255 grey levels). Returns float32 (N, H, W, C) in the
    same 0..255 units, not clipped nor rounded (the exact Gaussian)."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    out = np.empty((len(records), *hw, len(mean)), np.float32)
    for k, record in enumerate(records):
        z = _record_rng(seed, _GAUSSIAN, split, record).standard_normal(out.shape[1:], dtype=np.float32)
        out[k] = mean + std * z
    return out


def labelled_subset(labels: np.ndarray, *, per_class: int, num_classes: int, seed: int) -> np.ndarray:
    """Indices (sorted) into ``labels`` of ``per_class`` examples of each class, chosen by ``seed``: the balanced
    labelled set of a semi-supervised run. A class with fewer examples is an error naming the counts."""
    if per_class < 0:
        raise ValueError(f"labelled_per_class={per_class}: a count >= 0 is needed")
    counts = np.bincount(labels, minlength=num_classes)
    if short := {k: int(counts[k]) for k in range(num_classes) if counts[k] < per_class}:
        raise ValueError(f"labelled_per_class={per_class}: the training split has fewer images of some classes "
                         f"({{class: images}} = {short}); lower labelled_per_class or val_size")
    rng = np.random.default_rng([seed, _LABELLED])
    keep = [rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in range(num_classes)]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


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


def verify_archive(path: str | os.PathLike) -> None:
    """Read a .tar.gz / .zip archive through to its end so that every checksum is checked before extraction.

    ``tarfile`` stops at the end-of-archive blocks and never reaches the gzip trailer, so a bad gzip CRC-32
    would go unnoticed; ``ZipFile.testzip`` checks each member's CRC-32. Raises the library's error (the
    caller names the archive).
    """
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if (bad := zf.testzip()) is not None:
                raise zipfile.BadZipFile(f"bad CRC-32 for member {bad}")


def read_cifar_meta(path: str | os.PathLike, names_key: str) -> list[str]:
    """The class names of an official ``batches.meta`` / ``meta`` file; errors name the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            meta = pickle.load(fh, encoding="latin1")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise DatasetError(
            f"{path}: truncated or corrupt CIFAR meta file ({type(exc).__name__}: {exc}). Restore it from the "
            "official archive (put the archive next to the folder and run again: a partial folder is re-extracted)."
        ) from exc
    if not isinstance(meta, dict) or names_key not in meta:
        keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise DatasetError(f"{path}: not a CIFAR meta file (expected key {names_key!r}, found {keys})")
    return [str(name) for name in meta[names_key]]


def load_cifar(folder: str | os.PathLike, dataset: str = "cifar10") -> dict:
    """Read a whole CIFAR folder: {'train': (x, y), 'test': (x, y), 'classes': [...]}."""
    spec = CIFAR_SPECS[dataset]
    folder = Path(folder)
    out = {}
    for split, files in (("train", spec.train_files), ("test", spec.test_files)):
        parts = [read_cifar_pickle(folder / name, spec.label_key) for name in files]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    out["classes"] = read_cifar_meta(folder / spec.meta_file, spec.names_key)
    return out


class CIFARImages(Dataset):
    """In-memory CIFAR images -> (float CHW tensor, int64 label).

    ``images`` (N, 32, 32, 3) are uint8, or float32 in the same 0..255 units (Gaussian images); ``records`` are
    their indices in the source (what the corruptions are keyed by).

    Indices may be plain ints or ``(index, seed)`` pairs from :class:`ShardSampler`; with a seed the random
    augmentation is reseeded per sample, so it is reproducible across workers and resumes.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, mean: np.ndarray, std: np.ndarray,
                 augment: bool, records: np.ndarray | None = None) -> None:
        self.images = images
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.records = np.arange(len(images)) if records is None else np.asarray(records)
        self.set_normalization(mean, std)
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

    def set_normalization(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = np.asarray(mean, np.float32)  # (32, 32, 3) per-pixel or (3,) per-channel, in [0, 1] units
        self.std = np.asarray(std, np.float32)

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


Source = Literal["pickle", "folder"]
# metric suffix of a test set that is not the first one: test/acc_exact = the exact pickle records
TEST_SUFFIXES = {"pickle": "_exact", "folder": "_images"}


class CIFARDataModule(ShardedDataModule):
    """CIFAR-10/100 under ``<root>/cifar`` (``root`` defaults to LIT_PAPERS_DATA), from the official pickles or a
    folder of images.

    Args:
        dataset: ``cifar10`` or ``cifar100``.
        root: data root (the folder holding ``cifar/``); default ``$LIT_PAPERS_DATA``.
        source: where train/val images come from: ``pickle`` (the official batches in ``cifar-10-batches-py``,
            exact pixels) or ``folder`` (``<root>/cifar/<image_folder>/{train,test}/<class>/*.jpg|png``, class
            names from the sorted folder names; decoded once into a cached uint8 array, see
            :mod:`lit_papers.data.image_folder`).
        image_folder: the folder-of-images set under ``<root>/cifar`` (``cifar-10-jpeg``: all 60k images, JPEG q75).
        test_sources: the test sets, in order (default ``[source]``). The first is logged as ``test/<metric>``,
            further ones with a suffix: ``test/acc_exact`` for the pickle records, ``test/acc_images`` for a folder.
        val_size: images held out of the training images for validation (int) or a fraction (float);
            5000 = the 45k/5k split of He et al. 2016.
        normalization: ``per_pixel_mean`` (He et al.: subtract the per-pixel mean of the training split),
            ``channel`` (per-channel mean/std of the training split) or ``none`` (images in [0, 1]: x = v / 255,
            so ``round(x * 255)`` gives back the exact uint8 value v). The statistics are computed after the
            image corruption, saved in every checkpoint (``state_dict``) and a checkpoint's statistics are used at
            test/predict time.
        augment: pad-4 random crop + horizontal flip on the training split.
        seed: seed of the training order and augmentation (default: the run's ``seed_everything``).
        download: fetch the official archive when pickle files are missing (``prepare_data``).
        label_noise: Zhang et al.'s corrupted labels: each *training-split* label is, with probability p fixed per
            record (:func:`corrupt_labels`), replaced by a uniformly random class; 1.0 = completely random labels.
            The val split and the test sets keep their true labels, so ``val/acc`` and ``test/acc`` measure
            generalisation to the true labels, and the fit of the corrupted labels is measured on the training
            split itself (``eval_train``), as the paper's training accuracy is.
        image_corruption: ``shuffled_pixels`` (one pixel permutation for every image, :func:`shuffle_pixels`),
            ``random_pixels`` (a permutation per image, :func:`random_pixels`) or ``gaussian`` (i.i.d. pixels with
            the per-channel mean and std of the real training split, :func:`gaussian_images`); applied to every
            split (train, val, test) with the labels unchanged.
        corruption_seed: the seed of the label noise, the pixel permutations, the Gaussian images and the labelled
            subset (independent of ``split_seed`` and of the data order).
        labelled_per_class: semi-supervised: keep the labels of this many training-split images per class
            (balanced, chosen by ``corruption_seed`` among the training split's true labels,
            :func:`labelled_subset`); every other training label becomes ``-1`` (= unlabelled, ``UNLABELLED``).
            The val split and the test sets keep all their labels. ``None`` = every label kept.
        eval_train: validate on the training split too (its labels as trained on, corrupted or -1, without
            augmentation) as a second val loader: ``val_loader_names`` is then ``["val", "train_eval"]`` (just
            ``["train_eval"]`` when ``val_size=0``), so a module logs the paper's training accuracy as
            ``train_eval/acc``.
    """

    def __init__(
        self,
        *,
        dataset: Literal["cifar10", "cifar100"] = "cifar10",
        root: str | None = None,
        source: Source = "pickle",
        image_folder: str = "cifar-10-jpeg",
        test_sources: list[Source] | None = None,
        val_size: int | float = 5000,
        split_seed: int = 0,
        normalization: Literal["per_pixel_mean", "channel", "none"] = "per_pixel_mean",
        augment: bool = True,
        batch_size: int = 128,
        eval_batch_size: int = 500,
        num_workers: int = 2,
        seed: int | None = None,
        download: bool = True,
        label_noise: float = 0.0,
        image_corruption: ImageCorruption = "none",
        corruption_seed: int = 0,
        labelled_per_class: int | None = None,
        eval_train: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        if not 0.0 <= label_noise <= 1.0:
            raise ValueError(f"label_noise={label_noise}: a probability in [0, 1] is needed")
        if image_corruption not in get_args(ImageCorruption):
            raise ValueError(f"image_corruption={image_corruption!r}: one of {get_args(ImageCorruption)}")
        if labelled_per_class is not None and label_noise > 0:
            raise ValueError("label_noise and labelled_per_class together are not supported: corrupt the labels or "
                             "hide them, not both")
        self.label_noise, self.image_corruption, self.corruption_seed = label_noise, image_corruption, corruption_seed
        self.labelled_per_class, self.eval_train = labelled_per_class, eval_train
        self.val_loader_names: list[str] = ["val"]
        self.dataset, self.val_size, self.split_seed = dataset, val_size, split_seed
        self.normalization, self.augment, self.download = normalization, augment, download
        self.eval_batch_size = eval_batch_size
        self.spec = CIFAR_SPECS[dataset]
        self.folder = family_dir("cifar", root) / self.spec.folder
        self.image_dir = family_dir("cifar", root) / image_folder
        self.source = source
        self.test_sources = list(test_sources) if test_sources else [source]
        if len(set(self.test_sources)) != len(self.test_sources):
            raise ValueError(f"test_sources has a repeated source: {self.test_sources}")
        self.test_metric_suffixes = [""] + [TEST_SUFFIXES[s] for s in self.test_sources[1:]]
        self.num_classes = self.spec.num_classes
        self.classes: list[str] = []
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.data_description: dict = {}
        self._pickles: dict | None = None
        self._listings: dict[str, FolderListing] = {}
        self._checkpoint_stats: dict | None = None

    # -- files --------------------------------------------------------------------------------------------
    def _missing(self) -> list[str]:
        needed = [*self.spec.train_files, *self.spec.test_files, self.spec.meta_file]
        return [name for name in needed if not (self.folder / name).is_file()]

    def _uses(self, source: str) -> bool:
        return self.source == source or source in self.test_sources

    def prepare_data(self) -> None:
        if self._uses("folder"):
            splits = (["train"] if self.source == "folder" else []) + (["test"] if "folder" in self.test_sources else [])
            absent = [s for s in splits if not (self.image_dir / s).is_dir()]
            if absent:
                raise DatasetMissingError(
                    f"{self.image_dir}: missing {', '.join(a + '/' for a in absent)} (expected {self.image_dir}/<split>/<class>/*.jpg|png; "
                    "there is no download for a folder-of-images copy: put one there or use source=pickle)")
        if self._uses("pickle"):
            self._prepare_pickles()

    def _prepare_pickles(self) -> None:
        missing = self._missing()
        if not missing:
            return
        remote = self.spec.remote
        archive = self.folder.parent / remote.filename
        if not archive.is_file():
            if not self.download:
                raise DatasetMissingError(
                    f"{self.folder}: missing {', '.join(missing)}. Put {remote.filename} (from {remote.url}, md5 "
                    f"{remote.md5}) into {self.folder.parent} and run again (a partial folder is moved aside and the "
                    "archive extracted), or set download=true.")
            archive = fetch(remote, self.folder.parent, family="cifar",
                            expected=[f"{self.spec.folder}/{n}" for n in missing])
        if self.folder.exists():  # a partial extraction: extract() would keep it as it is, forever
            aside = self.folder.with_name(f"{self.folder.name}.partial-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.folder, aside)
            print(f"[lit-papers] {self.folder} lacked {', '.join(missing)} (partial extraction); moved it to "
                  f"{aside} (delete it when done) and extracting {archive} again", file=sys.stderr)
        try:
            verify_archive(archive)
            extract(archive, self.folder.parent, member_root=self.spec.folder)
        except DatasetError:
            raise
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as exc:
            raise DatasetError(f"{archive}: corrupt archive ({type(exc).__name__}: {exc}); delete it and download "
                               f"it again from {remote.url} (md5 {remote.md5})") from exc
        if still := self._missing():
            raise DatasetError(f"{archive}: extracted, but {self.folder} still lacks {', '.join(still)} "
                               "(not the official archive?)")

    def _read(self, source: str, split: str, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray, list, dict]:
        """One split of one source -> (images uint8 (N, 32, 32, 3), labels, class names, description)."""
        if source == "pickle":
            if missing := self._missing():
                raise DatasetMissingError(f"{self.folder}: missing {', '.join(missing)} (run prepare_data / download)")
            if self._pickles is None:
                self._pickles = load_cifar(self.folder, self.dataset)
            x, y = self._pickles[split]
            names = self._pickles["classes"]
            files = self.spec.train_files if split == "train" else self.spec.test_files
            desc = {"source": "pickle", "path": str(self.folder), "files": list(files), "lossy": False}
        else:
            x, y, listing = load_image_folder(self.image_dir / split, hw=(32, 32),
                                              classes=tuple(classes) if classes else None)
            self._listings[split] = listing
            names = list(listing.classes)
            desc = {"source": "folder", "path": str(listing.root), "formats": listing.formats,
                    "lossy": any(f in ("jpg", "jpeg") for f in listing.formats), "fingerprint": listing.fingerprint[:16]}
        if classes is not None and list(names) != list(classes):
            raise DatasetError(f"{desc['path']}: class names {names} differ from the training set's {classes}; "
                               "labels would not mean the same classes")
        if len(names) != self.num_classes:
            raise DatasetError(f"{desc['path']}: {len(names)} classes, but {self.dataset} has {self.num_classes}")
        return x, y, list(names), desc

    # -- datasets ---------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.classes:
            return
        x, y, classes, train_desc = self._read(self.source, "train", None)
        n_val = self.val_size
        n_val = int(round(n_val * len(x))) if isinstance(n_val, float) else int(n_val)
        if not 0 <= n_val < len(x):
            raise ValueError(f"val_size={self.val_size} leaves no training images out of {len(x)} in "
                             f"{train_desc['path']}")
        order = np.random.default_rng(self.split_seed).permutation(len(x))
        train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
        # per-channel statistics of the real training split, in grey levels: what Gaussian images are drawn with
        real = x[train_idx].reshape(-1, 3).astype(np.float64)
        real_mean, real_std = real.mean(axis=0), real.std(axis=0)
        x = self._corrupt_images(x, TRAIN_RECORDS, real_mean, real_std)
        y_train, corruption = self._training_labels(y[train_idx], train_idx)
        x_train = x[train_idx]
        mean, std = self._statistics(x_train)
        common = dict(mean=mean, std=std)
        self.train_set = CIFARImages(x_train, y_train, augment=self.augment, records=train_idx, **common)
        self.val_set = CIFARImages(x[val_idx], y[val_idx], augment=False, records=val_idx, **common)
        self.train_eval_set = CIFARImages(x_train, y_train, augment=False, records=train_idx, **common)
        self.val_loader_names = (["val"] if len(val_idx) or not self.eval_train else []) + (
            ["train_eval"] if self.eval_train else [])
        self.test_sets, tests = [], []
        for source, suffix in zip(self.test_sources, self.test_metric_suffixes, strict=True):
            tx, ty, _, desc = self._read(source, "test", classes)
            tx = self._corrupt_images(tx, TEST_RECORDS, real_mean, real_std)
            self.test_sets.append(CIFARImages(tx, ty, augment=False, **common))
            tests.append({"metric_suffix": suffix, **desc, "images": len(tx)})
        self.test_set = self.test_sets[0]
        self.classes = classes
        self.mean, self.std = mean, std
        self.data_description = {
            "train": {**train_desc, "images": len(train_idx)}, "val": {**train_desc, "images": len(val_idx)},
            "test": tests, "split_seed": self.split_seed, "normalization": self.normalization,
            "corruption": corruption,
        }
        self._pickles = None
        d = self.data_description
        for split, desc in [("train", d["train"]), ("val", d["val"]),
                            *[(f"test{t['metric_suffix']}", t) for t in d["test"]]]:
            self.report_split(split, self._describe(desc), {
                "source": desc["source"], "images": desc["images"], "lossy": int(desc["lossy"]), "path": desc["path"]})
        if self.label_noise or self.image_corruption != "none" or self.labelled_per_class is not None:
            self.report_split("corruption", self._describe_corruption(corruption),
                              {k: v for k, v in corruption.items() if isinstance(v, int | float | str)})
        if self._checkpoint_stats is not None:
            self._use_checkpoint_statistics(self._checkpoint_stats)

    def _corrupt_images(self, images: np.ndarray, split: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """``image_corruption`` applied to every record of one source split (indices = the records)."""
        records = np.arange(len(images))
        if self.image_corruption == "shuffled_pixels":
            return shuffle_pixels(images, seed=self.corruption_seed)
        if self.image_corruption == "random_pixels":
            return random_pixels(images, records, seed=self.corruption_seed, split=split)
        if self.image_corruption == "gaussian":
            return gaussian_images(records, mean=mean, std=std, seed=self.corruption_seed, split=split,
                                   hw=images.shape[1:3])
        return images

    def _training_labels(self, labels: np.ndarray, records: np.ndarray) -> tuple[np.ndarray, dict]:
        """The training split's labels as trained on (noisy, or -1 where hidden), and what was done to them."""
        out = corrupt_labels(labels, records, p=self.label_noise, num_classes=self.num_classes,
                             seed=self.corruption_seed)
        info: dict[str, Any] = {"label_noise": float(self.label_noise), "image_corruption": self.image_corruption,
                                "corruption_seed": int(self.corruption_seed),
                                "changed_labels": int((out != labels).sum()), "train_images": len(labels)}
        if self.labelled_per_class is not None:
            keep = labelled_subset(labels, per_class=self.labelled_per_class, num_classes=self.num_classes,
                                   seed=self.corruption_seed)
            hidden = np.ones(len(out), bool)
            hidden[keep] = False
            out[hidden] = UNLABELLED
            info.update(labelled_per_class=int(self.labelled_per_class), labelled=len(keep))
        return out, info

    @staticmethod
    def _describe_corruption(c: dict) -> str:
        parts = [f"label_noise={c['label_noise']:g} ({c['changed_labels']} of {c['train_images']} training labels "
                 f"changed)", f"image_corruption={c['image_corruption']}", f"corruption_seed={c['corruption_seed']}"]
        if "labelled" in c:
            parts.append(f"{c['labelled']} labelled ({c['labelled_per_class']} per class), the rest -1")
        return ", ".join(parts)

    @staticmethod
    def _describe(d: dict) -> str:
        """Which files a split comes from, and whether they are lossy."""
        kind = "exact pickle records" if d["source"] == "pickle" else "/".join(d["formats"]) + " images"
        return f"{d['images']} {kind}{' (lossy)' if d['lossy'] else ''} from {d['path']}"

    def image_refs(self) -> dict[str, list[ImageRef]]:
        """The image files of each folder split (for ``lit-papers check-data``); pickles have none."""
        return {split: [ImageRef(listing.root / rel, (32, 32), f"in the {listing.root} split") for rel in listing.files]
                for split, listing in self._listings.items()}

    def _statistics(self, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.normalization == "none":
            return np.zeros(3), np.ones(3)
        if self.normalization == "per_pixel_mean":
            return x_train.astype(np.float64).mean(axis=0) / 255.0, np.ones(3)  # (32, 32, 3), (3,)
        flat = x_train.reshape(-1, 3).astype(np.float64) / 255.0
        return flat.mean(axis=0), flat.std(axis=0)

    # -- what a checkpoint's predictions depend on ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.mean is not None:
            state["normalization"] = {
                "kind": self.normalization,
                "mean": torch.as_tensor(self.mean, dtype=torch.float64),
                "std": torch.as_tensor(self.std, dtype=torch.float64),
                "train_images": len(self.train_set),
                "train_path": self.data_description["train"]["path"],
            }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        if "normalization" in state_dict:
            self._checkpoint_stats = state_dict["normalization"]
            if self.classes:  # Lightning calls setup() before restoring the datamodule
                self._use_checkpoint_statistics(self._checkpoint_stats)

    def _use_checkpoint_statistics(self, saved: dict) -> None:
        mean = torch.as_tensor(saved["mean"]).double().numpy()
        std = torch.as_tensor(saved["std"]).double().numpy()
        same = (saved.get("kind") == self.normalization and mean.shape == self.mean.shape
                and np.allclose(mean, self.mean, atol=1e-9) and np.allclose(std, self.std, atol=1e-9))
        if not same:
            diff = (f"max |mean difference| {np.abs(mean - self.mean).max():.3g}" if mean.shape == self.mean.shape
                    else f"{saved.get('kind')} vs {self.normalization}")
            print(f"[lit-papers] using the checkpoint's normalisation statistics ({saved.get('kind')}, over "
                  f"{saved.get('train_images')} training images of {saved.get('train_path')}); the current training "
                  f"files give different ones ({diff})", file=sys.stderr)
        self.mean, self.std = mean, std
        for dataset in (self.train_set, self.val_set, self.train_eval_set, *self.test_sets):
            dataset.set_normalization(mean, std)

    # -- loaders ------------------------------------------------------------------------------------------
    def train_dataloader(self):
        return self.train_loader(self.train_set)

    def val_dataloader(self):
        if not self.eval_train:
            return self.eval_loader(self.val_set, batch_size=self.eval_batch_size)
        sets = {"val": self.val_set, "train_eval": self.train_eval_set}
        loaders = [self.eval_loader(sets[name], batch_size=self.eval_batch_size) for name in self.val_loader_names]
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self):
        loaders = [self.eval_loader(s, batch_size=self.eval_batch_size) for s in self.test_sets]
        return loaders[0] if len(loaders) == 1 else loaders

    def predict_dataloader(self):
        return self.eval_loader(self.test_sets[0], batch_size=self.eval_batch_size)
