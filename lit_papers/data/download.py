"""Fetching official dataset archives: official URL or a mirror, checksum, temporary file, atomic rename.

Nothing half-written is ever left under the data root: a download goes to ``<name>.part-<pid>`` in the
target folder, is checked (size and md5) and only then renamed into place; an extraction goes to a
temporary folder that is renamed as a whole. Any failure removes the temporary file or folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from zlib import error as zlib_error

from tqdm.auto import tqdm

from lit_papers.data.root import mirror as default_mirror

CHUNK = 1 << 20
log = logging.getLogger(__name__)


class DatasetError(RuntimeError):
    """A dataset is missing, corrupt or malformed; the message names the file and the fix."""


class DatasetMissingError(DatasetError):
    pass


class ChecksumError(DatasetError):
    pass


@dataclass(frozen=True)
class Remote:
    """One official archive: where it comes from and what it must hash to."""

    url: str
    filename: str
    md5: str | None = None
    size: int | None = None


def md5sum(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _candidate_sources(remote: Remote, family: str | None, mirror: str | None) -> list[str]:
    sources = []
    if mirror:
        base = mirror.rstrip("/")
        names = [f"{family}/{remote.filename}", remote.filename] if family else [remote.filename]
        for name in names:
            if "://" in base:
                sources.append(f"{base}/{name}")
            else:
                sources.append(os.path.join(base, name))
    sources.append(remote.url)
    return sources


def _copy_stream(src, dst, total: int | None, desc: str, digest) -> int:
    written = 0
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False) as bar:
        while block := src.read(CHUNK):
            dst.write(block)
            digest.update(block)
            written += len(block)
            bar.update(len(block))
    return written


def _fetch_one(source: str, tmp: Path, remote: Remote, timeout: float) -> None:
    """Copy ``source`` (URL or local path) into ``tmp`` and verify size and md5; raises on any mismatch."""
    digest = hashlib.md5()
    if "://" in source:
        request = urllib.request.Request(source, headers={"User-Agent": "lit-papers"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length else remote.size
            written = _copy_stream(response, out, total, remote.filename, digest)
            out.flush()
            os.fsync(out.fileno())
    else:
        if not os.path.isfile(source):
            raise FileNotFoundError(source)
        with open(source, "rb") as src, open(tmp, "wb") as out:
            written = _copy_stream(src, out, os.path.getsize(source), remote.filename, digest)
            out.flush()
            os.fsync(out.fileno())
    if remote.size is not None and written != remote.size:
        raise ChecksumError(
            f"{source}: got {written} bytes, expected {remote.size} (truncated or wrong file); nothing was kept"
        )
    if remote.md5 is not None and digest.hexdigest() != remote.md5:
        raise ChecksumError(
            f"{source}: md5 {digest.hexdigest()} does not match the official {remote.md5} "
            "(corrupt or truncated download); nothing was kept"
        )


def fetch(
    remote: Remote,
    folder: str | os.PathLike,
    *,
    family: str | None = None,
    mirror: str | None = None,
    timeout: float = 30.0,
    expected: Sequence[str] = (),
) -> Path:
    """Make sure ``folder/remote.filename`` exists with the right checksum; download it if not.

    Tries ``mirror`` (default ``$LIT_PAPERS_MIRROR``) first, then the official URL. A checksum mismatch is
    fatal (it is reported, not retried from another source, so a bad mirror is noticed). Without network
    the error names the folder, the files a user can put there instead, and the URL.
    """
    folder = Path(folder)
    target = folder / remote.filename
    if target.is_file() and (remote.md5 is None or md5sum(target) == remote.md5):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{remote.filename}.part-{os.getpid()}"
    mirror = default_mirror() if mirror is None else mirror
    failures = []
    for source in _candidate_sources(remote, family, mirror):
        try:
            _fetch_one(source, tmp, remote, timeout)
        except ChecksumError:
            tmp.unlink(missing_ok=True)
            raise
        except (OSError, urllib.error.URLError, ValueError) as exc:
            tmp.unlink(missing_ok=True)
            failures.append(f"{source}: {exc}")
            continue
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)
        return target
    wanted = ", ".join(expected) if expected else remote.filename
    raise DatasetMissingError(
        f"dataset files missing in {folder}: expected {wanted}.\n"
        f"Could not download {remote.filename} ({'; '.join(failures)}).\n"
        f"Fix: download {remote.url} (md5 {remote.md5}) into {folder}, or set LIT_PAPERS_MIRROR to a folder "
        f"or URL holding it, or point LIT_PAPERS_DATA at a root that has it."
    )


def ensure_archive(remote: Remote, folder: str | os.PathLike, *, family: str | None = None,
                   mirror: str | None = None, timeout: float = 30.0, expected: Sequence[str] = ()) -> Path:
    """``folder/remote.filename``: an archive already there is used as it is (its md5 is computed and a
    mismatch with the official one is logged, not fatal: a repacked or newer official file still extracts and
    is checked file by file afterwards); a missing one is fetched with :func:`fetch` (md5 checked)."""
    target = Path(folder) / remote.filename
    if target.is_file():
        if remote.md5 is not None:
            digest = md5sum(target)
            if digest != remote.md5:
                log.warning("%s: md5 %s differs from the official %s; using the existing file anyway (delete it "
                            "to download the official one)", target, digest, remote.md5)
        return target
    return fetch(remote, folder, family=family, mirror=mirror, timeout=timeout, expected=expected)


def extract(archive: str | os.PathLike, into: str | os.PathLike, *, member_root: str, merge: bool = False,
            last: Sequence[str] = ()) -> Path:
    """Extract a .tar(.gz)/.zip archive whose content sits under ``member_root/`` into ``into/member_root``.

    Extraction happens in a temporary sibling folder. Without ``merge`` it is renamed into place as a whole, only
    when complete, and an existing ``into/member_root`` is kept as it is. With ``merge`` (archives that share a
    top folder: VOC2007 trainval and test both hold ``VOCdevkit/VOC2007``) each extracted file that is not yet
    present is renamed into place one by one (each rename is atomic), files under a folder named in ``last``
    (e.g. ``ImageSets``, whose listings mark a split as complete) after all others; existing files are kept.
    Members that would escape the folder (absolute paths, ``..``) are refused.
    """
    into = Path(into)
    final = into / member_root
    if final.exists() and not merge:
        return final
    into.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=into))
    try:
        archive = str(archive)
        if zipfile.is_zipfile(archive):
            try:
                with zipfile.ZipFile(archive) as zf:
                    for name in zf.namelist():
                        _check_member(name, archive)
                    zf.extractall(scratch)
            except (zipfile.BadZipFile, zlib_error) as exc:
                raise DatasetError(f"{archive}: corrupt zip archive ({exc}); delete it and retry") from exc
        else:
            try:
                with tarfile.open(archive) as tf:
                    for member in tf.getmembers():
                        _check_member(member.name, archive)
                    tf.extractall(scratch, filter="data")
            except (tarfile.TarError, EOFError) as exc:
                raise DatasetError(f"{archive}: not a readable tar/zip archive ({exc}); delete it and retry") from exc
        produced = scratch / member_root
        if not produced.exists():
            raise DatasetError(f"{archive}: expected a top folder {member_root!r} inside the archive")
        if not final.exists():
            os.replace(produced, final)
        elif merge:
            _merge_tree(produced, final, last=tuple(last))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def _merge_tree(src: Path, dst: Path, *, last: tuple[str, ...]) -> None:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    files.sort(key=lambda p: any(part in last for part in p.relative_to(src).parts))  # stable: `last` at the end
    for path in files:
        target = dst / path.relative_to(src)
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def _check_member(name: str, archive: str) -> None:
    if name.startswith(("/", "\\")) or ".." in Path(name).parts:
        raise DatasetError(f"{archive}: refusing unsafe member path {name!r}")
