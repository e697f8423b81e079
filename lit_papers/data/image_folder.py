"""A folder-of-images split (``<split>/<class>/*.jpg|png``) decoded once into a cached uint8 array.

Layout: one sub-folder per class, class names = folder names, sorted (label ``k`` = the k-th name); image files
within a class are taken in sorted name order. Other files (``.DS_Store``, ``Thumbs.db``, ...) are counted and
logged as skipped; an empty class folder is an error.

The first read decodes every file with the strict reader :func:`lit_papers.data.images.read_image` (a truncated
or corrupt file is an error naming it) behind a progress bar, and writes the result to the user cache
(``$LIT_PAPERS_CACHE/image_folders``, default ``~/.cache/lit_papers/image_folders``; never inside the data root,
which may be read-only). The cache file is keyed by a fingerprint of the file list, sizes and modification
times, so a changed folder is decoded again; it is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lit_papers.data.download import DatasetError, DatasetMissingError
from lit_papers.data.images import read_image
from lit_papers.data.root import cache_root

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1  # bump when the cached content changes meaning


@dataclass(frozen=True)
class FolderListing:
    """What a split folder holds: image files with their class index, and the fingerprint of the listing."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # relative to root, "<class>/<name>"
    labels: np.ndarray  # int64 (N,)
    skipped: tuple[str, ...]  # non-image files, relative to root
    fingerprint: str

    @property
    def formats(self) -> dict[str, int]:
        """Image count per file suffix (``{"jpg": 50000}``)."""
        out: dict[str, int] = {}
        for name in self.files:
            suffix = name.rsplit(".", 1)[-1].lower()
            out[suffix] = out.get(suffix, 0) + 1
        return out


def list_image_folder(root: str | os.PathLike, *, classes: tuple[str, ...] | None = None) -> FolderListing:
    """Scan ``root/<class>/*``. ``classes`` (e.g. the training split's) must equal the folders found, if given."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetMissingError(f"image folder {root} not found (expected {root}/<class>/*.jpg|png)")
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not found:
        raise DatasetError(f"image folder {root} has no class sub-folders (expected {root}/<class>/*.jpg|png)")
    if classes is not None and tuple(found) != tuple(classes):
        raise DatasetError(f"image folder {root}: class folders {found} differ from the expected {list(classes)}")
    digest = hashlib.sha256(f"image-folder v{CACHE_VERSION}".encode())
    files, labels, skipped = [], [], []
    for label, name in enumerate(found):
        entries = sorted(os.scandir(root / name), key=lambda e: e.name)
        n_before = len(files)
        for entry in entries:
            rel = f"{name}/{entry.name}"
            if not entry.is_file() or not entry.name.lower().endswith(IMAGE_SUFFIXES):
                skipped.append(rel)
                continue
            stat = entry.stat()
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            files.append(rel)
            labels.append(label)
        if len(files) == n_before:
            raise DatasetError(f"class folder {root / name} holds no .jpg/.jpeg/.png images")
    return FolderListing(root=root, classes=tuple(found), files=tuple(files), labels=np.asarray(labels, np.int64),
                         skipped=tuple(skipped), fingerprint=digest.hexdigest())


def cache_file(listing: FolderListing, hw: tuple[int, int], cache_dir: Path | None = None) -> Path:
    key = hashlib.sha256(f"{listing.fingerprint}\0{hw}".encode()).hexdigest()[:24]
    readable = f"{listing.root.parent.name}-{listing.root.name}".replace(os.sep, "_")
    return (cache_dir or cache_root() / "image_folders") / f"{readable}-{key}.npz"


def _decode_all(listing: FolderListing, hw: tuple[int, int], progress: bool) -> np.ndarray:
    images = np.empty((len(listing.files), *hw, 3), np.uint8)  # (N, H, W, 3)
    bar = tqdm(listing.files, desc=f"decoding {listing.root} (once; then cached)", unit="img",
               disable=not progress, mininterval=1.0)
    for i, rel in enumerate(bar):
        images[i] = read_image(listing.root / rel, expected_hw=hw, where=f"in the {listing.root} split")
    return images


def _write_atomic(target: Path, **arrays: np.ndarray) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_image_folder(root: str | os.PathLike, *, hw: tuple[int, int], classes: tuple[str, ...] | None = None,
                      cache_dir: str | os.PathLike | None = None, progress: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, FolderListing]:
    """``root/<class>/*`` -> (images uint8 (N, H, W, 3) RGB, labels int64 (N,), listing).

    Reads the cached array when the folder's fingerprint matches, else decodes every file (strictly; every image
    must be ``hw``) and writes the cache. An unreadable cache file is decoded again, with a warning.
    """
    listing = list_image_folder(root, classes=classes)
    if listing.skipped:
        log.warning("%s: skipped %d non-image files (e.g. %s)", listing.root, len(listing.skipped), listing.skipped[0])
    target = cache_file(listing, hw, Path(cache_dir) if cache_dir is not None else None)
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as cached:
                images, files = cached["images"], cached["files"]
            if images.shape == (len(listing.files), *hw, 3) and tuple(files.tolist()) == listing.files:
                return images, listing.labels, listing
            log.warning("%s does not match %s; decoding again", target, listing.root)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("unreadable cache %s (%s); decoding %s again", target, exc, listing.root)
    print(f"[lit-papers] decoding {len(listing.files)} images of {listing.root} once; cache: {target}", file=sys.stderr)
    images = _decode_all(listing, hw, progress)
    try:
        _write_atomic(target, images=images, files=np.asarray(listing.files))
    except OSError as exc:  # a read-only cache costs time, not correctness
        log.warning("could not write the image cache %s (%s); the next run decodes again", target, exc)
    return images, listing.labels, listing
