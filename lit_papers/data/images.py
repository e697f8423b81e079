"""Strict image reading for every DataModule: a truncated or corrupt file is an error that names the file.

OpenCV and libjpeg decode a JPEG that was cut short as a partly grey image and only print "Premature end of JPEG
file" (without a path); PIL does the same when ``LOAD_TRUNCATED_IMAGES`` is set. A silently half-grey training
image is a wrong result, so every reader here checks the file's structure before decoding:

* JPEG: starts with SOI (``FF D8``) and ends with EOI (``FF D9``, trailing zero padding allowed);
* PNG: the 8-byte signature and a final ``IEND`` chunk;
* then the full decode (OpenCV), and the decoded size against the size the annotation states.

:func:`image_size` reads only the header (PIL, no pixel decode): the fast check that runs at setup.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lit_papers.data.download import DatasetError, DatasetMissingError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


def check_structure(data: bytes, path: Path | str) -> None:
    """Raise :class:`DatasetError` naming ``path`` when ``data`` is a truncated JPEG or PNG.

    Other formats (BMP, ...) are left to the decoder. Trailing NUL padding after a JPEG's EOI is accepted, as
    decoders do.
    """
    if data[:2] == b"\xff\xd8":
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise DatasetError(f"image {path} is a truncated JPEG ({len(data)} bytes, no end-of-image marker); "
                               "re-download or re-extract it")
    elif data[:8] == _PNG_SIGNATURE:
        if not data.rstrip(b"\x00").endswith(_PNG_IEND):
            raise DatasetError(f"image {path} is a truncated PNG ({len(data)} bytes, no IEND chunk); "
                               "re-download or re-extract it")
    elif len(data) == 0:
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
