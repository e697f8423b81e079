"""COCO and VOC downloads (issue 17, case 9) against a loopback HTTP server or a mirror folder, never the network:
official archive layout, md5 checked after a download, an existing archive with another md5 accepted (logged),
VOC2007 trainval and test merged into one ``VOCdevkit/VOC2007``."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import tarfile
import zipfile

import pytest

from lit_papers.data import coco as coco_module
from lit_papers.data import voc as voc_module
from lit_papers.data.download import ChecksumError, DatasetError, extract
from tests.data.test_download import http_root  # noqa: F401  (fixture)

CLOSED = "http://127.0.0.1:9"  # a closed loopback port: "no network"


def _coco_archives(shared_data, n=3) -> dict[str, bytes]:
    """val2017.zip and annotations_trainval2017.zip in the official layout, from the real sample's first images."""
    src = shared_data / "coco"
    data = json.loads((src / "annotations" / "instances_val2017.json").read_text())
    images = sorted(data["images"], key=lambda i: i["id"])[:n]
    ids = {i["id"] for i in images}
    sub = {"images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
           "categories": data["categories"]}
    blobs = {}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for info in images:
            zf.write(src / "val2017" / info["file_name"], f"val2017/{info['file_name']}")
    blobs["val2017.zip"] = buffer.getvalue()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("annotations/instances_val2017.json", json.dumps(sub))
        zf.writestr("annotations/captions_val2017.json", "{}")
    blobs["annotations_trainval2017.zip"] = buffer.getvalue()
    return blobs


def _point_coco_at(monkeypatch, base: str, blobs: dict[str, bytes], *, good_md5: bool = True):
    for key, filename in (("val2017", "val2017.zip"), ("annotations", "annotations_trainval2017.zip")):
        official = coco_module.COCO_REMOTES[key]
        assert official.filename == filename and official.url.endswith("/" + filename)
        md5 = hashlib.md5(blobs[filename]).hexdigest() if good_md5 else "0" * 32
        monkeypatch.setitem(coco_module.COCO_REMOTES, key,
                            dataclasses.replace(official, url=f"{base}/{filename}", md5=md5))
    monkeypatch.setenv("LIT_PAPERS_MIRROR", "")


def _coco_dm(root):
    return coco_module.COCODataModule(root=str(root), train_split="val2017", val_split="val2017",
                                      test_split="val2017", min_size=64, max_size=96, num_workers=0)


def test_coco_prepare_data_downloads_checks_extracts_and_loads(http_root, shared_data, tmp_path, monkeypatch):  # noqa: F811
    srv, base = http_root
    blobs = _coco_archives(shared_data)
    for name, blob in blobs.items():
        (srv / name).write_bytes(blob)
    _point_coco_at(monkeypatch, base, blobs)
    dm = _coco_dm(tmp_path / "data")
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["val"]) == 3 and dm.datasets["val"][0][0].shape[0] == 3
    folder = tmp_path / "data" / "coco"
    assert sorted(p.name for p in folder.iterdir()) == ["annotations", "annotations_trainval2017.zip", "val2017",
                                                        "val2017.zip"]  # nothing half-written left
    for name in blobs:
        (srv / name).unlink()
    _coco_dm(tmp_path / "data").prepare_data()  # already there: no request made


def test_coco_corrupt_download_is_refused(http_root, shared_data, tmp_path, monkeypatch):  # noqa: F811
    srv, base = http_root
    blobs = _coco_archives(shared_data, n=1)
    for name, blob in blobs.items():
        (srv / name).write_bytes(blob)
    _point_coco_at(monkeypatch, base, blobs, good_md5=False)
    with pytest.raises(ChecksumError, match="annotations_trainval2017.zip: md5 .* does not match"):
        _coco_dm(tmp_path / "data").prepare_data()
    assert list((tmp_path / "data" / "coco").iterdir()) == []


def test_existing_archive_with_another_md5_is_used_and_logged(shared_data, tmp_path, monkeypatch, caplog):
    blobs = _coco_archives(shared_data, n=2)
    folder = tmp_path / "data" / "coco"
    folder.mkdir(parents=True)
    for name, blob in blobs.items():
        (folder / name).write_bytes(blob)  # e.g. a repacked archive a user copied there
    _point_coco_at(monkeypatch, CLOSED, blobs, good_md5=False)
    with caplog.at_level(logging.WARNING, logger="lit_papers.data.download"):
        _coco_dm(tmp_path / "data").prepare_data()
    assert sum("differs from the official" in r.getMessage() for r in caplog.records) == 2
    assert (folder / "val2017").is_dir() and (folder / "annotations" / "instances_val2017.json").is_file()


def _voc_tar(shared_data, listing: str) -> bytes:
    """A VOC2007 tar in the official layout (top folder VOCdevkit/VOC2007) holding one split of the sample."""
    src = shared_data / "voc" / "VOCdevkit" / "VOC2007"
    ids = (src / "ImageSets" / "Main" / f"{listing}.txt").read_text().split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i in ids:
            tar.add(src / "Annotations" / f"{i}.xml", f"VOCdevkit/VOC2007/Annotations/{i}.xml")
            tar.add(src / "JPEGImages" / f"{i}.jpg", f"VOCdevkit/VOC2007/JPEGImages/{i}.jpg")
        tar.add(src / "ImageSets" / "Main" / f"{listing}.txt", f"VOCdevkit/VOC2007/ImageSets/Main/{listing}.txt")
    return buffer.getvalue()


def test_voc2007_trainval_and_test_from_a_mirror_merge_into_one_devkit(shared_data, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "voc"
    mirror.mkdir(parents=True)
    for key, listing in ((("2007", "trainval"), "trainval"), (("2007", "test"), "test")):
        official = voc_module.VOC_REMOTES[key]
        blob = _voc_tar(shared_data, listing)
        (mirror / official.filename).write_bytes(blob)
        monkeypatch.setitem(voc_module.VOC_REMOTES, key, dataclasses.replace(
            official, url=f"{CLOSED}/{official.filename}", md5=hashlib.md5(blob).hexdigest()))
    monkeypatch.setenv("LIT_PAPERS_MIRROR", str(tmp_path / "mirror"))
    dm = voc_module.VOCDataModule(root=str(tmp_path / "data"), min_size=100, max_size=150, num_workers=0)
    dm.prepare_data()
    main = tmp_path / "data" / "voc" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    assert sorted(p.name for p in main.iterdir()) == ["test.txt", "trainval.txt"]
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 5 and len(dm.datasets["test"]) == 5
    assert [p.name for p in (tmp_path / "data" / "voc").iterdir() if p.name.startswith(".")] == []


def test_voc_splits_map_to_the_official_tars():
    assert voc_module.voc_remote("2007_train").filename == "VOCtrainval_06-Nov-2007.tar"
    assert voc_module.voc_remote("2007_test").filename == "VOCtest_06-Nov-2007.tar"
    assert voc_module.voc_remote("2012_val").url.startswith("http://host.robots.ox.ac.uk/pascal/VOC/voc2012/")
    assert voc_module.voc_remote("2012_test") is None  # not distributed with annotations


def test_zip_with_a_bad_crc_names_the_archive_and_leaves_nothing(tmp_path):
    archive = tmp_path / "val2017.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("val2017/a.txt", b"0123456789" * 100)
    blob = bytearray(archive.read_bytes())
    blob[blob.index(b"0123456789") + 5] ^= 0xFF  # one stored byte flipped: the CRC no longer matches
    archive.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match=r"val2017\.zip: corrupt zip archive .*CRC"):
        extract(archive, tmp_path / "coco", member_root="val2017")
    assert list((tmp_path / "coco").iterdir()) == []
