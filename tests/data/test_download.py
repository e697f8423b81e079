"""Downloads against a loopback HTTP server: success, corrupt and truncated files, no network, mirrors."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest

from lit_papers.data import cifar as cifar_module
from lit_papers.data.download import ChecksumError, DatasetMissingError, Remote, extract, fetch


@pytest.fixture
def http_root(tmp_path):
    """Serves tmp_path/'srv' on 127.0.0.1; yields (folder, base_url). Bounded: stopped after the test."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _payload(n: int = 50_000) -> bytes:
    return np.random.default_rng(0).integers(0, 256, size=n, dtype=np.uint8).tobytes()


def test_fetch_downloads_and_verifies(http_root, tmp_path):
    srv, base = http_root
    data = _payload()
    (srv / "a.bin").write_bytes(data)
    remote = Remote(url=f"{base}/a.bin", filename="a.bin", md5=hashlib.md5(data).hexdigest(), size=len(data))
    out = fetch(remote, tmp_path / "dest", mirror="")
    assert out.read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["a.bin"]  # no temporary left behind
    (srv / "a.bin").unlink()  # second call: verified local copy, no network needed
    assert fetch(remote, tmp_path / "dest", mirror="") == out


def test_corrupt_download_is_refused_and_nothing_is_left(http_root, tmp_path):
    srv, base = http_root
    data = _payload()
    (srv / "a.bin").write_bytes(data[:100] + b"X" + data[101:])  # one byte flipped
    remote = Remote(url=f"{base}/a.bin", filename="a.bin", md5=hashlib.md5(data).hexdigest())
    with pytest.raises(ChecksumError, match="md5 .* does not match"):
        fetch(remote, tmp_path / "dest", mirror="")
    assert list((tmp_path / "dest").iterdir()) == []


def test_truncated_download_is_refused(http_root, tmp_path):
    srv, base = http_root
    data = _payload()
    (srv / "a.bin").write_bytes(data[: len(data) // 2])
    remote = Remote(url=f"{base}/a.bin", filename="a.bin", md5=hashlib.md5(data).hexdigest(), size=len(data))
    with pytest.raises(ChecksumError, match="truncated"):
        fetch(remote, tmp_path / "dest", mirror="")
    assert list((tmp_path / "dest").iterdir()) == []


def test_missing_without_network_names_folder_files_and_url(tmp_path):
    # a closed loopback port stands for "no network"
    remote = Remote(url="http://127.0.0.1:9/cifar-10-python.tar.gz", filename="cifar-10-python.tar.gz", md5="0" * 32)
    with pytest.raises(DatasetMissingError) as info:
        fetch(remote, tmp_path / "cifar", mirror="", timeout=2, expected=["cifar-10-batches-py/data_batch_1"])
    message = str(info.value)
    assert str(tmp_path / "cifar") in message
    assert "cifar-10-batches-py/data_batch_1" in message
    assert "http://127.0.0.1:9/cifar-10-python.tar.gz" in message
    assert not (tmp_path / "cifar").exists() or list((tmp_path / "cifar").iterdir()) == []


def test_mirror_folder_is_used_before_the_url(tmp_path):
    data = _payload(1000)
    (tmp_path / "mirror" / "cifar").mkdir(parents=True)
    (tmp_path / "mirror" / "cifar" / "a.bin").write_bytes(data)
    remote = Remote(url="http://127.0.0.1:9/a.bin", filename="a.bin", md5=hashlib.md5(data).hexdigest())
    out = fetch(remote, tmp_path / "dest", family="cifar", mirror=str(tmp_path / "mirror"), timeout=2)
    assert out.read_bytes() == data


def _cifar_tarball(shared_data) -> bytes:
    """A cifar-10-python.tar.gz built from the real 500-per-batch sample."""
    buffer = io.BytesIO()
    folder = shared_data / "cifar" / "cifar-10-batches-py"
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ["batches.meta", "test_batch", *[f"data_batch_{i}" for i in range(1, 6)]]:
            tar.add(folder / name, arcname=f"cifar-10-batches-py/{name}")
    return buffer.getvalue()


def test_cifar_prepare_data_downloads_extracts_and_loads(http_root, tmp_path, shared_data, monkeypatch):
    srv, base = http_root
    blob = _cifar_tarball(shared_data)
    (srv / "cifar-10-python.tar.gz").write_bytes(blob)
    spec = cifar_module.CIFAR_SPECS["cifar10"]
    remote = Remote(url=f"{base}/cifar-10-python.tar.gz", filename=spec.remote.filename,
                    md5=hashlib.md5(blob).hexdigest(), size=len(blob))
    monkeypatch.setitem(cifar_module.CIFAR_SPECS, "cifar10", dataclasses.replace(spec, remote=remote))
    monkeypatch.setenv("LIT_PAPERS_MIRROR", "")
    dm = cifar_module.CIFARDataModule(root=str(tmp_path / "data"), val_size=100, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 2400 and len(dm.val_set) == 100 and len(dm.test_set) == 500
    leftovers = [p.name for p in (tmp_path / "data" / "cifar").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_extract_refuses_path_traversal(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(Exception, match="unsafe"):
        extract(archive, tmp_path / "out", member_root="x")
    assert not (tmp_path / "escape.txt").exists()


def test_pickle_fixture_helper_roundtrip(tmp_path):
    # guards the tarball helper above: the pickles it packs are the official protocol-2 dicts
    payload = {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]}
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    images, labels = cifar_module.read_cifar_pickle(path, "labels")
    assert images.shape == (2, 32, 32, 3) and labels.tolist() == [1, 2]
