"""Issue 17 item 7: a partial CIFAR folder is re-extracted from the archive; corrupt meta/archives name the file.

Everything runs on small archives built in tmp (never on ../shared).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lit_papers.data import cifar as cifar_module
from lit_papers.data.cifar import CIFARDataModule
from lit_papers.data.download import DatasetError

NAMES = ["batches.meta", "test_batch", *[f"data_batch_{i}" for i in range(1, 6)]]


def _members(n: int = 12) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {"batches.meta": pickle.dumps({"label_names": [f"c{k}" for k in range(10)], "num_vis": 3072}, protocol=2)}
    for name in NAMES[1:]:
        out[name] = pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                  "labels": [int(v) for v in rng.integers(0, 10, n)]}, protocol=2)
    return out


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, blob in members.items():
            zf.writestr(f"cifar-10-batches-py/{name}", blob)
    return buffer.getvalue()


def _partial_root(tmp_path: Path, archive: bytes, missing: str = "batches.meta") -> Path:
    """root/cifar/ with the archive and a folder extracted from it, but for ``missing``."""
    cifar = tmp_path / "data" / "cifar"
    (cifar / "cifar-10-batches-py").mkdir(parents=True)
    (cifar / "cifar-10-python.tar.gz").write_bytes(archive)
    for name, blob in _members().items():
        if name != missing:
            (cifar / "cifar-10-batches-py" / name).write_bytes(blob)
    return tmp_path / "data"


@pytest.mark.parametrize("download", [False, True])
def test_partial_extraction_is_redone_from_the_archive(tmp_path, monkeypatch, download):
    archive = _tar_gz(_members())
    root = _partial_root(tmp_path, archive)
    if download:  # the archive passes fetch's md5 check: fetch returns it and extraction must not be skipped
        spec = cifar_module.CIFAR_SPECS["cifar10"]
        remote = dataclasses.replace(spec.remote, url="http://127.0.0.1:9/none", md5=hashlib.md5(archive).hexdigest(),
                                     size=len(archive))
        monkeypatch.setitem(cifar_module.CIFAR_SPECS, "cifar10", dataclasses.replace(spec, remote=remote))
        monkeypatch.setenv("LIT_PAPERS_MIRROR", "")
    dm = CIFARDataModule(root=str(root), val_size=10, num_workers=0, download=download)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.classes == [f"c{k}" for k in range(10)]
    assert len(dm.train_set) + len(dm.val_set) == 60 and len(dm.test_set) == 12
    asides = [p.name for p in (root / "cifar").iterdir() if ".partial-" in p.name]
    assert len(asides) == 1 and not (root / "cifar" / asides[0] / "batches.meta").exists()
    assert not [p for p in (root / "cifar").iterdir() if p.name.startswith(".")], "no temporary leftovers"


def test_partial_folder_without_archive_says_where_to_put_it(tmp_path):
    root = _partial_root(tmp_path, b"")
    (root / "cifar" / "cifar-10-python.tar.gz").unlink()
    dm = CIFARDataModule(root=str(root), download=False)
    with pytest.raises(DatasetError, match=r"missing batches.meta\. Put cifar-10-python.tar.gz .* into .*cifar and "
                                           r"run again \(a partial folder is moved aside"):
        dm.prepare_data()


def test_truncated_meta_names_the_file(tmp_path):
    root = _partial_root(tmp_path, b"")
    blob = _members()["batches.meta"]
    (root / "cifar" / "cifar-10-batches-py" / "batches.meta").write_bytes(blob[: len(blob) // 2])
    dm = CIFARDataModule(root=str(root), val_size=10, num_workers=0, download=False)
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py/batches.meta: truncated or corrupt CIFAR meta file"):
        dm.setup("fit")


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1:]


@pytest.mark.parametrize("kind", ["zip", "tar.gz-data", "tar.gz-crc"])
def test_archive_with_a_bad_crc_names_the_archive(tmp_path, kind):
    members = _members()
    if kind == "zip":
        blob = _zip(members)
        at = blob.index(members["data_batch_3"][:64]) + 1000  # inside a stored member's data: its CRC-32 fails
    else:
        blob = _tar_gz(members)
        # inside the deflate stream, or the gzip trailer's CRC-32 (tarfile alone never reads that far)
        at = len(blob) // 2 if kind == "tar.gz-data" else len(blob) - 6
    root = _partial_root(tmp_path, _flip(blob, at))
    dm = CIFARDataModule(root=str(root), download=False)
    with pytest.raises(DatasetError, match=r"cifar/cifar-10-python.tar.gz: corrupt archive .*delete it and download"):
        dm.prepare_data()
    assert not [p for p in (root / "cifar").iterdir() if p.name.startswith(".")], "no temporary leftovers"
