"""Strict image reading for every DataModule: a truncated or corrupt file is an error that names the file.

OpenCV and libjpeg decode a JPEG that was cut short as a partly grey image and only print "Premature end of JPEG
file" (without a path); PIL does the same when ``LOAD_TRUNCATED_IMAGES`` is set. A silently half-grey training
image is a wrong result, so every reader here checks the file's structure before decoding:

* JPEG: starts with SOI (``FF D8``) and ends with EOI (``FF D9``, trailing zero padding allowed);
* PNG: the 8-byte signature and a final ``IEND`` chunk;
* then the full decode (OpenCV), and the decoded size against the size the annotation states.

:func:`image_size` reads only the header (PIL, no pixel decode). :func:`check_image` is the per-file check a
DataModule runs over every image of a split at setup, before any training step (``verify_images`` option):

* ``"header"`` (default, about a millisecond a file): the file exists, its header gives the annotation's size and
  its last bytes carry the JPEG/PNG end marker (so a file cut short is found without decoding it);
* ``"full"``: the complete decode of :func:`read_image` (what ``lit-papers check-data`` runs);
* ``"none"``: no check (errors then surface when the sample is loaded, still naming the file).

:func:`verify_images` runs the check over many files (threads, optional progress bar) and collects the failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from lit_papers.data.download import DatasetError, DatasetMissingError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_TAIL = 4096  # bytes read from the end of a file by the header check (end marker after NUL padding)
VerifyMode = Literal["header", "full", "none"]
VERIFY_MODES = ("header", "full", "none")


def check_structure(data: bytes, path: Path | str, *, size: int | None = None, tail: bytes | None = None) -> None:
    """Raise :class:`DatasetError` naming ``path`` when the file is a truncated JPEG or PNG.

    ``data`` is the whole file, or only its first bytes when ``tail`` (its last bytes) and ``size`` (its length)
    are given. Other formats (BMP, ...) are left to the decoder. Trailing NUL padding after a JPEG's EOI is
    accepted, as decoders do.
    """
    size = len(data) if size is None else size
    end = (data if tail is None else tail).rstrip(b"\x00")
    if data[:2] == b"\xff\xd8":
        if not end.endswith(b"\xff\xd9"):
            raise DatasetError(f"image {path} is a truncated JPEG ({size} bytes, no end-of-image marker); "
                               "re-download or re-extract it")
    elif data[:8] == _PNG_SIGNATURE:
        if not end.endswith(_PNG_IEND):
            raise DatasetError(f"image {path} is a truncated PNG ({size} bytes, no IEND chunk); "
                               "re-download or re-extract it")
    elif size == 0:
        raise DatasetError(f"image {path} is empty (0 bytes); re-download or re-extract it")


def read_image(path: Path | str, *, expected_hw: tuple[int, int] | None = None, where: str = "") -> np.ndarray:
    """File -> (H, W, 3) uint8 RGB. Raises with the path on a missing, truncated, corrupt or mis-sized file.

    ``expected_hw`` is the (height, width) the annotation gives; ``where`` names the annotation file in the
    message (``"listed in instances_val2017.json"``).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetMissingError(f"image {path} {where or 'referenced by the dataset'} not found")
    data = path.read_bytes()
    check_structure(data, path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"image {path} cannot be decoded (corrupt); re-download it")
    if expected_hw is not None and tuple(image.shape[:2]) != tuple(expected_hw):
        raise DatasetError(f"image {path} is {image.shape[1]}x{image.shape[0]} but {where or 'the annotation'} "
                           f"says {expected_hw[1]}x{expected_hw[0]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path: Path | str) -> tuple[int, int]:
    """(height, width) from the file header only (no pixel decode). Raises naming the file when unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DatasetMissingError(f"image {path} not found")
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"image {path} is not a readable image ({e}); re-download it") from e
    return h, w


def _check_ends(path: Path) -> None:
    """The structural check of :func:`check_structure` from the file's first and last bytes only."""
    with open(path, "rb") as fh:
        head = fh.read(16)
        size = fh.seek(0, 2)
        start, tail = size, b""
        while start > 0 and not tail.rstrip(b"\x00"):  # skip NUL padding of any length, block by block
            start = max(0, start - _TAIL)
            fh.seek(start)
            tail = fh.read(size - start)
    check_structure(head, path, size=size, tail=tail)


@dataclass(frozen=True)
class ImageRef:
    """One image a split references: its file, the (height, width) the annotation gives, the annotation file."""

    path: Path
    expected_hw: tuple[int, int] | None = None
    where: str = ""


def check_image(ref: ImageRef, mode: VerifyMode = "header") -> None:
    """Check one image (see the module docstring for the modes); raises :class:`DatasetError` naming the file."""
    if mode == "none":
        return
    if mode == "full":
        read_image(ref.path, expected_hw=ref.expected_hw, where=ref.where)
        return
    if mode != "header":
        raise ValueError(f"verify_images must be one of {VERIFY_MODES}, got {mode!r}")
    path = Path(ref.path)
    if not path.is_file():
        raise DatasetMissingError(f"image {path} {ref.where or 'referenced by the dataset'} not found")
    _check_ends(path)
    hw = image_size(path)
    if ref.expected_hw is not None and tuple(hw) != tuple(ref.expected_hw):
        raise DatasetError(f"image {path} is {hw[1]}x{hw[0]} but {ref.where or 'the annotation'} says "
                           f"{ref.expected_hw[1]}x{ref.expected_hw[0]}")


def verify_images(refs: Sequence[ImageRef] | Iterable[ImageRef], mode: VerifyMode = "header", *,
                  progress: bool = False, desc: str = "checking images", workers: int = 8
                  ) -> list[tuple[Path, str]]:
    """Check every image of ``refs``; returns ``[(path, reason)]`` of the bad ones (empty when all are fine).

    Threads overlap the file reads (the work is I/O and C code); ``progress`` shows a tqdm bar.
    """
    refs = list(refs)
    if mode == "none" or not refs:
        return []

    def one(ref: ImageRef) -> tuple[Path, str] | None:
        try:
            check_image(ref, mode)
        except DatasetError as err:
            return Path(ref.path), str(err)
        return None

    bad: list[tuple[Path, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(one, refs)
        if progress:
            from tqdm.auto import tqdm

            results = tqdm(results, total=len(refs), desc=desc, unit="img")
        for result in results:
            if result is not None:
                bad.append(result)
    return bad


def bad_images_error(bad: list[tuple[Path, str]], *, checked: int, what: str, mode: str, show: int = 10
                     ) -> DatasetError:
    """One error listing the bad images of a split (the first ``show`` with their reason) and the fix."""
    lines = [f"  {reason}" for _, reason in bad[:show]]
    if len(bad) > show:
        lines.append(f"  ... and {len(bad) - show} more")
    return DatasetError(f"{what}: {len(bad)} of {checked} images failed the {mode!r} check before training:\n"
                        + "\n".join(lines) + "\nFix: re-download or re-extract these files (list them all with "
                        "`lit-papers check-data --config ...`), or remove them from the annotations.")
