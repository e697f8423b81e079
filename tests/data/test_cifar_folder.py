"""CIFAR from a folder of images (``<split>/<class>/*.jpg|png``): listing, strict decode, cache, splits, test sets.

Tiny sets are generated into tmp (a few PNG/JPEG files per class); the real JPEG copy in ../shared/data is only
read (never a cache or anything else written there).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from lit_papers.data import image_folder
from lit_papers.data.cifar import CIFARDataModule, read_cifar_pickle
from lit_papers.data.download import DatasetError
from lit_papers.data.image_folder import list_image_folder, load_image_folder

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_image_folder(root: Path, *, per_class: dict[str, int], seed: int = 0, classes=CLASSES) -> dict:
    """Write ``root/<split>/<class>/NNNN.{png,jpg}`` (even index PNG, odd JPEG q95); returns the PNG pixels."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in per_class.items():
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # class-coloured image with noise: learnable, and distinct per file
                image = np.clip(rng.normal(25 * k, 30, size=(32, 32, 3)), 0, 255).astype(np.uint8)  # RGB
                suffix = "png" if i % 2 == 0 else "jpg"
                path = folder / f"{i:04d}.{suffix}"
                cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                if suffix == "png":
                    written[f"{split}/{name}/{path.name}"] = image
    return written


def folder_and_exact_test_sets(tmp_path: Path, monkeypatch, shared_data: Path) -> CIFARDataModule:
    """A CIFARDataModule with two test sets: a generated 30-image folder (``test/acc``) and the 500 exact records of
    ``shared_data`` (``test/acc_exact``), as the ``[folder, pickle]`` recipes; cache under ``tmp_path``."""
    monkeypatch.setenv("LIT_PAPERS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_image_folder(root / "cifar" / "cifar-10-jpeg", per_class={"train": 2, "test": 3})
    os.symlink(shared_data / "cifar" / "cifar-10-batches-py", root / "cifar" / "cifar-10-batches-py")
    return CIFARDataModule(root=str(root), source="folder", test_sources=["folder", "pickle"], val_size=2,
                           eval_batch_size=64, num_workers=0, download=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LIT_PAPERS_CACHE", str(folder))
    return folder


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_folder_is_read_end_to_end_with_sorted_class_names_and_a_cache(tmp_path, cache, monkeypatch):
    root = tmp_path / "set"
    pngs = make_image_folder(root, per_class={"train": 3})
    (root / "train" / "cat" / "Thumbs.db").write_bytes(b"junk")  # counted and skipped, not an image
    before = _snapshot(root)
    x, y, listing = load_image_folder(root / "train", hw=(32, 32), progress=False)
    assert listing.classes == tuple(sorted(CLASSES))
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [3] * 10
    assert listing.skipped == ("cat/Thumbs.db",) and listing.formats == {"png": 20, "jpg": 10}
    for rel, image in pngs.items():  # PNG is lossless: the exact pixels, RGB order, with the folder's label
        i = listing.files.index(rel.split("/", 1)[1])
        assert np.array_equal(x[i], image) and listing.classes[y[i]] == rel.split("/")[1]
    assert _snapshot(root) == before, "reading must not write into the data folder"
    cached = list((cache / "image_folders").glob("*.npz"))
    assert len(cached) == 1 and not list((cache / "image_folders").glob(".*"))

    # a second read costs no decode: it must come from the cache
    def no_decode(*args, **kwargs):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(image_folder, "read_image", no_decode)
    x2, y2, _ = load_image_folder(root / "train", hw=(32, 32), progress=False)
    assert np.array_equal(x2, x) and np.array_equal(y2, y)

    # a changed file changes the fingerprint: decoded again, with the new pixels
    monkeypatch.undo()
    monkeypatch.setenv("LIT_PAPERS_CACHE", str(cache))
    target = root / "train" / "dog" / "0000.png"
    cv2.imwrite(str(target), np.full((32, 32, 3), 7, np.uint8))
    x3, _, listing3 = load_image_folder(root / "train", hw=(32, 32), progress=False)
    assert listing3.fingerprint != listing.fingerprint
    assert (x3[listing3.files.index("dog/0000.png")] == 7).all()


def test_truncated_jpeg_and_wrong_size_fail_naming_the_file(tmp_path, cache):
    root = tmp_path / "set"
    make_image_folder(root, per_class={"train": 2})
    bad = root / "train" / "frog" / "0001.jpg"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"frog/0001\.jpg is a truncated JPEG"):
        load_image_folder(root / "train", hw=(32, 32), progress=False)
    cv2.imwrite(str(bad), np.zeros((16, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"frog/0001\.jpg is 32x16"):
        load_image_folder(root / "train", hw=(32, 32), progress=False)
    assert not list(cache.rglob("*.npz")), "a failed decode must not leave a cache file"


def test_unreadable_cache_is_rebuilt(tmp_path, cache):
    root = tmp_path / "set"
    make_image_folder(root, per_class={"train": 1})
    x, _, _ = load_image_folder(root / "train", hw=(32, 32), progress=False)
    (path,) = (cache / "image_folders").glob("*.npz")
    path.write_bytes(path.read_bytes()[:100])
    x2, _, _ = load_image_folder(root / "train", hw=(32, 32), progress=False)
    assert np.array_equal(x, x2)


def test_empty_class_and_mismatched_classes_are_errors(tmp_path):
    root = tmp_path / "set"
    make_image_folder(root, per_class={"train": 1, "test": 1})
    with pytest.raises(DatasetError, match="differ from the expected"):
        list_image_folder(root / "test", classes=("airplane", "bird"))
    (root / "train" / "zebra").mkdir()
    with pytest.raises(DatasetError, match=r"zebra holds no \.jpg/\.jpeg/\.png images"):
        list_image_folder(root / "train")


def test_real_jpeg_class_order_matches_batches_meta_and_the_exact_records(shared_data):
    """Sorted folder names = batches.meta's label order, and label k in both sources is the same class:
    MANIFEST says test/<class>/NNNN.jpg is the NNNN-th test record of that class, so the exact record and the
    JPEG the folder label predicts must be close (JPEG q75: ~6 grey levels mean error) and the nearest file."""
    from lit_papers.data.cifar import read_cifar_meta
    from lit_papers.data.images import read_image

    jpeg = shared_data / "cifar" / "cifar-10-jpeg"
    meta = read_cifar_meta(shared_data / "cifar" / "cifar-10-batches-py" / "batches.meta", "label_names")
    assert sorted(p.name for p in (jpeg / "test").iterdir()) == meta == sorted(p.name for p in (jpeg / "train").iterdir())
    x, y = read_cifar_pickle(shared_data / "cifar" / "cifar-10-batches-py" / "test_batch", "labels")
    seen = {k: 0 for k in range(10)}
    for i in range(30):
        rank = seen[int(y[i])]
        seen[int(y[i])] += 1
        folder = jpeg / "test" / meta[int(y[i])]
        err = [np.abs(read_image(folder / f"{r:04d}.jpg").astype(int) - x[i]).mean() for r in range(rank + 3)]
        assert err[rank] < 15 and int(np.argmin(err)) == rank, (i, err)


def _root_with_exact_pickles(tmp_path, shared_data, per_class) -> Path:
    root = tmp_path / "data"
    make_image_folder(root / "cifar" / "cifar-10-jpeg", per_class=per_class)
    os.symlink(shared_data / "cifar" / "cifar-10-batches-py", root / "cifar" / "cifar-10-batches-py")
    return root


def test_datamodule_folder_source_with_exact_test_records(tmp_path, shared_data, cache):
    root = _root_with_exact_pickles(tmp_path, shared_data, {"train": 6, "test": 2})
    dm = CIFARDataModule(root=str(root), source="folder", test_sources=["folder", "pickle"], val_size=10,
                         num_workers=0, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.classes == CLASSES
    assert len(dm.train_set) == 50 and len(dm.val_set) == 10
    assert dm.test_metric_suffixes == ["", "_exact"]
    assert [len(s) for s in dm.test_sets] == [20, 500]
    # per-pixel mean of the (folder) training split, also applied to the exact test records
    assert np.allclose(dm.mean, dm.train_set.images.astype(np.float64).mean(axis=0) / 255.0)
    image, _ = dm.test_sets[1][0]
    expected = dm.test_sets[1].images[0].astype(np.float32) / 255.0 - dm.mean.astype(np.float32)
    assert np.allclose(image.numpy().transpose(1, 2, 0), expected, atol=1e-6)
    desc = dm.data_description
    assert desc["train"]["source"] == "folder" and desc["train"]["lossy"] is True
    assert [(t["metric_suffix"], t["source"], t["images"], t["lossy"]) for t in desc["test"]] == [
        ("", "folder", 20, True), ("_exact", "pickle", 500, False)]
    assert [len(loader.dataset) for loader in dm.test_dataloader()] == [20, 500]
    refs = dm.image_refs()  # what `lit-papers check-data` verifies: every folder file, none for the pickles
    assert {k: len(v) for k, v in refs.items()} == {"train": 60, "test": 20}
    assert all(r.path.is_file() and r.expected_hw == (32, 32) for r in refs["train"])
    assert len(dm.predict_dataloader().dataset) == 20


def test_folder_classes_must_match_the_pickle_meta(tmp_path, shared_data, cache):
    root = tmp_path / "data"
    make_image_folder(root / "cifar" / "cifar-10-jpeg", per_class={"train": 2, "test": 1},
                      classes=[f"c{k}" for k in range(10)])
    os.symlink(shared_data / "cifar" / "cifar-10-batches-py", root / "cifar" / "cifar-10-batches-py")
    dm = CIFARDataModule(root=str(root), source="folder", test_sources=["folder", "pickle"], val_size=2,
                         num_workers=0, download=False)
    with pytest.raises(DatasetError, match="differ from the training set's"):
        dm.setup("fit")


def test_missing_folder_names_the_layout(tmp_path):
    dm = CIFARDataModule(root=str(tmp_path), source="folder", download=False)
    with pytest.raises(DatasetError, match=r"cifar-10-jpeg: missing train/, test/ \(expected .*<split>/<class>"):
        dm.prepare_data()


def test_tiny_jpeg_config_trains_and_tests_on_both_test_sets(cli, tmp_path, shared_data):
    """configs/resnet_cifar/tiny_jpeg.yaml end to end on a generated folder set: test/acc and test/acc_exact."""
    import csv

    root = _root_with_exact_pickles(tmp_path, shared_data, {"train": 4, "test": 2})
    cli("fit", "--config", "configs/resnet_cifar/tiny_jpeg.yaml", "--wandb", "false",
        f"--data.init_args.root={root}", env={"LIT_PAPERS_CACHE": str(tmp_path / "cache")})
    rows = list(csv.DictReader(open(cli.runs / "resnet_cifar" / "tiny_jpeg" / "v0" / "csv" / "metrics.csv")))
    final = {k: v for row in rows for k, v in row.items() if v not in ("", None)}
    assert float(final["test/acc_n"]) == 20 and float(final["test/acc_exact_n"]) == 500
    assert 0 <= float(final["test/acc_exact"]) <= 1 and "test/error_exact" in final
    assert not [p for p in (root / "cifar").rglob("*") if p.suffix == ".npz"], "no cache inside the data root"
    assert pickle.loads((shared_data / "cifar" / "cifar-10-batches-py" / "batches.meta").read_bytes(),
                        encoding="latin1")["label_names"] == CLASSES
