"""Reading the official Omniglot release (Lake et al. 2015, github.com/brendenlake/omniglot, ``python/``).

Archives (zipped or extracted, side by side under ``<root>/omniglot``)::

    images_background.zip         964 characters, 30 alphabets    md5 68d2efa1b9178cc56df9314c21c6e718
    images_evaluation.zip         659 characters, 20 alphabets    md5 6b91aef0f799c5bb55b94e3f2daec811
    images_background_small1.zip  136 characters,  5 alphabets    md5 e704a628b5459e08445c13499850abc4
    images_background_small2.zip  (small background set 2)
    all_runs.zip                  the 20-way one-shot benchmark   md5 e8996daecdf12afeeb4a53a179f06b19

Layout inside an archive: ``<archive>/<Alphabet>/characterNN/<drawer>_<NN>.png``, 105x105 PNGs of mode ``1``
where **True is white background and False is ink**. We invert so that ink = 255 in a uint8 image and
resize (Pillow's antialiased bilinear) to the requested side. ``all_runs.zip``: ``runXX/training/classYY.png``,
``runXX/test/itemYY.png``, ``runXX/class_labels.txt`` with lines ``runXX/test/itemAA.png runXX/training/classBB.png``.

Bad input: a file that is not ``.png`` (``Thumbs.db``, ``.DS_Store``, ``__MACOSX/``) is skipped and counted; a
``.png`` that does not decode, a PNG at the wrong depth (no alphabet folder), an empty character folder or a
malformed ``class_labels.txt`` raises :class:`DatasetError` naming the file and the fix.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lit_papers.data.download import DatasetError, Remote

log = logging.getLogger(__name__)

BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
REMOTES = {
    "images_background": Remote(f"{BASE_URL}/images_background.zip", "images_background.zip",
                                md5="68d2efa1b9178cc56df9314c21c6e718"),
    "images_evaluation": Remote(f"{BASE_URL}/images_evaluation.zip", "images_evaluation.zip",
                                md5="6b91aef0f799c5bb55b94e3f2daec811"),
    "images_background_small1": Remote(f"{BASE_URL}/images_background_small1.zip", "images_background_small1.zip",
                                       md5="e704a628b5459e08445c13499850abc4", size=1_319_022),
    "images_background_small2": Remote(f"{BASE_URL}/images_background_small2.zip", "images_background_small2.zip"),
    "all_runs": Remote(f"{BASE_URL}/one-shot-classification/all_runs.zip", "all_runs.zip",
                       md5="e8996daecdf12afeeb4a53a179f06b19", size=352_787),
}
RAW_SIZE = 105


@dataclass
class CharacterImages:
    """Decoded characters: ``images`` uint8 (N, S, S) with ink = 255, grouped by character: the images of
    character ``c`` are ``images[starts[c] : starts[c] + counts[c]]``; ``names[c]`` = ``Alphabet/characterNN``."""

    images: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    names: list[str]
    skipped: list[str] = field(default_factory=list)

    @property
    def alphabets(self) -> list[str]:
        return [n.split("/")[0] for n in self.names]


def decode_png(data: bytes, size: int, where: str) -> np.ndarray:
    """PNG bytes -> uint8 (size, size), ink = 255 (the release stores ink as False/black)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise DatasetError(f"{where}: not a PNG file (format {img.format}); restore it from the official zip")
            gray = img.convert("L")
    except DatasetError:
        raise
    except Exception as exc:  # PIL raises UnidentifiedImageError/OSError/SyntaxError/ValueError on bad files
        raise DatasetError(
            f"{where}: unreadable image ({type(exc).__name__}: {exc}). The archive is corrupt: delete it and "
            "download the official file again (or re-extract it)."
        ) from exc
    ink = ImageOps.invert(gray)
    if ink.size != (size, size):
        ink = ink.resize((size, size), Image.BILINEAR)  # Pillow widens the filter when shrinking (antialiased)
    return np.asarray(ink, dtype=np.uint8)


def _list_archive(source: Path) -> tuple[list[tuple[tuple[str, ...], str]], set[tuple[str, ...]], str]:
    """-> ([(parts under the top folder, member name)], folder parts seen, top folder) for a zip or a folder."""
    files: list[tuple[tuple[str, ...], str]] = []
    dirs: set[tuple[str, ...]] = set()
    if source.is_dir():
        for dirpath, dirnames, filenames in os.walk(source):
            rel = Path(dirpath).relative_to(source).parts
            dirnames.sort()
            if rel:
                dirs.add(rel)
            files += [((*rel, name), str(Path(dirpath) / name)) for name in sorted(filenames)]
        return files, dirs, source.name
    try:
        with zipfile.ZipFile(source) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{source}: not a readable zip ({exc}); delete it and download it again") from exc
    tops = {n.split("/")[0] for n in names if not n.startswith("__MACOSX")}
    if len(tops) != 1:
        raise DatasetError(f"{source}: expected one top folder inside the zip, found {sorted(tops)[:5]}")
    top = tops.pop()
    for name in names:
        parts = tuple(p for p in name.split("/") if p)
        if parts[0] == top:
            parts = parts[1:]
        if not parts:
            continue
        if name.endswith("/"):
            dirs.add(parts)
        else:
            files.append((parts, name))
            dirs.update(parts[:i] for i in range(1, len(parts)))
    return files, dirs, top


def read_characters(source: str | os.PathLike, size: int = 28) -> CharacterImages:
    """Decode every drawing of an images_* archive (``.zip`` or its extracted folder) into memory.

    Characters are sorted by ``Alphabet/characterNN``; drawings within a character by file name.
    """
    source = Path(source)
    files, dirs, top = _list_archive(source)
    by_char: dict[str, list[tuple[str, str]]] = {}
    skipped: list[str] = []
    for parts, member in files:
        if parts[0] == "__MACOSX" or parts[-1].startswith(".") or not parts[-1].lower().endswith(".png"):
            skipped.append(member)
            continue
        if len(parts) != 3:
            raise DatasetError(
                f"{source}: {member} is not at <alphabet>/<character>/<drawing>.png under the top folder {top!r} "
                "(missing alphabet or character folder?). Use the official archive layout, e.g. "
                f"{top}/Latin/character01/0001_01.png."
            )
        by_char.setdefault(f"{parts[0]}/{parts[1]}", []).append((parts[2], member))
    empty = sorted("/".join(d) for d in dirs if len(d) == 2 and "/".join(d) not in by_char and d[0] != "__MACOSX")
    if empty:
        raise DatasetError(f"{source}: character folder(s) without any PNG drawing: {empty[:5]}; restore them from "
                           "the official archive (a class with zero images would silently change the task)")
    if not by_char:
        raise DatasetError(f"{source}: no <alphabet>/<character>/*.png drawings found")
    if skipped:
        log.warning("%s: skipped %d non-PNG file(s), e.g. %s", source, len(skipped), skipped[0])
    names = sorted(by_char)
    counts = np.array([len(by_char[n]) for n in names], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    images = np.empty((int(counts.sum()), size, size), dtype=np.uint8)
    opener = zipfile.ZipFile(source) if source.is_file() else None
    try:
        i = 0
        for name in names:
            for _, member in sorted(by_char[name]):
                data = opener.read(member) if opener is not None else Path(member).read_bytes()
                images[i] = decode_png(data, size, f"{source}:{member}" if opener is not None else member)
                i += 1
    finally:
        if opener is not None:
            opener.close()
    return CharacterImages(images=images, starts=starts, counts=counts, names=names, skipped=skipped)


def concat_characters(parts: list[CharacterImages]) -> CharacterImages:
    """Join several archives (e.g. background + evaluation) into one character table."""
    if len(parts) == 1:
        return parts[0]
    names = [n for p in parts for n in p.names]
    if len(set(names)) != len(names):
        raise DatasetError("the same Alphabet/character appears in two archives; pass each archive once")
    counts = np.concatenate([p.counts for p in parts])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return CharacterImages(images=np.concatenate([p.images for p in parts]), starts=starts, counts=counts,
                           names=names, skipped=[s for p in parts for s in p.skipped])


@dataclass
class OfficialRuns:
    """The 20 official 20-way one-shot runs: ``support`` uint8 (R, 20, S, S) = training/class01..20,
    ``query`` uint8 (R, 20, S, S) = test/item01..20, ``query_labels`` int64 (R, 20) = index of the correct class."""

    support: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


_LABEL_LINE = re.compile(r"^(run\d+)/test/item(\d+)\.png\s+(run\d+)/training/class(\d+)\.png$")


def read_official_runs(source: str | os.PathLike, size: int = 28) -> OfficialRuns:
    """Read ``all_runs.zip`` (or its extracted folder ``all_runs/``)."""
    source = Path(source)
    if source.is_dir():
        def read(name: str) -> bytes:
            path = source / name
            if not path.is_file():
                raise DatasetError(f"{path}: missing; restore all_runs from the official release")
            return path.read_bytes()
        where = str(source)
    else:
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{source}: not a readable zip ({exc}); delete it and download it again") from exc
        members = set(zf.namelist())

        def read(name: str) -> bytes:
            if name not in members:
                raise DatasetError(f"{source}: member {name} missing; download the official all_runs.zip again")
            return zf.read(name)
        where = str(source)
    runs = sorted({p.split("/")[0] for p in (os.listdir(source) if source.is_dir() else members)
                   if re.fullmatch(r"run\d+", p.split("/")[0])})
    if not runs:
        raise DatasetError(f"{where}: no runXX folders found; expected the official all_runs layout")
    supports, queries, labels = [], [], []
    for run in runs:
        text = read(f"{run}/class_labels.txt").decode().strip().splitlines()
        items: dict[int, int] = {}
        for line_no, line in enumerate(text, 1):
            m = _LABEL_LINE.match(line.strip())
            if not m or m.group(1) != run or m.group(3) != run:
                raise DatasetError(f"{where}:{run}/class_labels.txt line {line_no}: malformed {line!r} (expected "
                                   f"'{run}/test/itemAA.png {run}/training/classBB.png')")
            items[int(m.group(2))] = int(m.group(4))
        n = len(items)
        if sorted(items) != list(range(1, n + 1)) or not set(items.values()) <= set(range(1, n + 1)):
            raise DatasetError(f"{where}:{run}/class_labels.txt does not list items 1..{n} with classes 1..{n}")
        supports.append(np.stack([decode_png(read(f"{run}/training/class{c:02d}.png"), size,
                                             f"{where}:{run}/training/class{c:02d}.png") for c in range(1, n + 1)]))
        queries.append(np.stack([decode_png(read(f"{run}/test/item{i:02d}.png"), size,
                                            f"{where}:{run}/test/item{i:02d}.png") for i in range(1, n + 1)]))
        labels.append(np.array([items[i] - 1 for i in range(1, n + 1)], dtype=np.int64))
    if len({len(s) for s in supports}) != 1:
        raise DatasetError(f"{where}: runs have different numbers of classes")
    return OfficialRuns(np.stack(supports), np.stack(queries), np.stack(labels))


def read_split_file(path: str | os.PathLike) -> list[tuple[str, int]]:
    """A ProtoNet split file (``Alphabet/characterNN/rotDDD`` per line) -> [(``Alphabet/characterNN``, k)]
    with the rotation as a multiple k of 90 degrees."""
    path = Path(path)
    out = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"(.+/character\d+)/rot(\d{3})", line)
        if not m or int(m.group(2)) % 90:
            raise DatasetError(f"{path}:{line_no}: malformed split line {line!r} (expected Alphabet/characterNN/rot090)")
        out.append((m.group(1), int(m.group(2)) // 90))
    if not out:
        raise DatasetError(f"{path}: empty split file")
    return out
