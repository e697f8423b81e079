"""CIFARDataModule on the real 500-per-batch CIFAR-10 sample, and its bad-input handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_papers.data.cifar import CIFARDataModule, load_cifar, read_cifar_pickle
from lit_papers.data.download import DatasetError, DatasetMissingError


@pytest.fixture(scope="module")
def dm():
    module = CIFARDataModule(val_size=500, num_workers=0, download=False)
    module.setup("fit")
    return module


def test_real_sample_loads_with_known_content(shared_data):
    data = load_cifar(shared_data / "cifar" / "cifar-10-batches-py")
    x, y = data["test"]
    assert x.shape == (500, 32, 32, 3) and x.dtype == np.uint8
    # MANIFEST: the official test batch starts cat, ship, ship, airplane, frog; class counts of the first 500
    assert [data["classes"][i] for i in y[:5]] == ["cat", "ship", "ship", "airplane", "frog"]
    assert np.bincount(y, minlength=10).tolist() == [57, 41, 51, 49, 40, 48, 54, 47, 57, 56]
    assert data["train"][0].shape == (2500, 32, 32, 3)


def test_row_layout_is_rgb_planes(tmp_path):
    import pickle

    row = np.zeros((1, 3072), np.uint8)
    row[0, 0] = 10  # R at (0, 0)
    row[0, 1024 + 33] = 20  # G at (1, 1)
    row[0, 2048 + 1023] = 30  # B at (31, 31)
    (tmp_path / "b").write_bytes(pickle.dumps({"data": row, "labels": [3]}, protocol=2))
    images, _ = read_cifar_pickle(tmp_path / "b", "labels")
    assert images[0, 0, 0, 0] == 10 and images[0, 1, 1, 1] == 20 and images[0, 31, 31, 2] == 30


def test_split_is_seeded_disjoint_and_complete(dm):
    other = CIFARDataModule(val_size=500, num_workers=0, download=False)
    other.setup("fit")
    assert torch.equal(other.val_set.labels, dm.val_set.labels)
    assert len(dm.train_set) + len(dm.val_set) == 2500
    train = {img.tobytes() for img in dm.train_set.images}
    assert not any(img.tobytes() in train for img in dm.val_set.images)
    reseeded = CIFARDataModule(val_size=500, split_seed=1, num_workers=0, download=False)
    reseeded.setup("fit")
    assert not torch.equal(reseeded.val_set.labels, dm.val_set.labels)


def test_per_pixel_mean_normalisation(dm):
    # He et al.: subtract the per-pixel mean of the training images; evaluated without augmentation
    x = dm.train_set.images.astype(np.float64) / 255.0 - dm.mean
    assert np.abs(x.mean(axis=0)).max() < 1e-9
    image, label = dm.val_set[0]
    expected = (dm.val_set.images[0].astype(np.float32) / 255.0 - dm.mean.astype(np.float32)).transpose(2, 0, 1)
    assert torch.allclose(image, torch.from_numpy(expected), atol=1e-6)
    assert label.dtype == torch.int64


def test_augmentation_is_a_padded_crop_or_flip_and_reproducible(dm):
    index = 7
    base = (dm.train_set.images[index].astype(np.float32) / 255.0 - dm.mean.astype(np.float32))  # (32, 32, 3)
    padded = np.zeros((40, 40, 3), np.float32)
    padded[4:36, 4:36] = base
    candidates = []
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy : dy + 32, dx : dx + 32]
            candidates += [crop, crop[:, ::-1]]
    seen = set()
    for seed in range(40):
        out = dm.train_set[(index, seed)][0].numpy().transpose(1, 2, 0)
        matches = [i for i, c in enumerate(candidates) if np.allclose(out, c, atol=1e-6)]
        assert matches, "augmented image is not a crop of the zero-padded image (or its flip)"
        seen.add(matches[0])
        again = dm.train_set[(index, seed)][0].numpy().transpose(1, 2, 0)
        assert np.array_equal(out, again), "same (index, seed) must give the same augmentation"
    assert len(seen) > 10, "augmentation should vary with the seed"


def test_truncated_pickle_gives_a_clear_error(tmp_path, shared_data):
    blob = (shared_data / "cifar" / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(blob[: len(blob) // 3])
    with pytest.raises(DatasetError, match=r"data_batch_1: truncated or corrupt CIFAR pickle"):
        read_cifar_pickle(bad, "labels")


def test_garbage_and_wrong_content_give_clear_errors(tmp_path):
    import pickle

    (tmp_path / "junk").write_bytes(b"\x00\x01not a pickle at all")
    with pytest.raises(DatasetError, match="junk"):
        read_cifar_pickle(tmp_path / "junk", "labels")
    (tmp_path / "wrong").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DatasetError, match="malformed CIFAR batch"):
        read_cifar_pickle(tmp_path / "wrong", "labels")
    (tmp_path / "nolabels").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}))
    with pytest.raises(DatasetError, match="expected keys"):
        read_cifar_pickle(tmp_path / "nolabels", "labels")


def test_missing_dataset_without_download_names_the_folder(tmp_path):
    dm = CIFARDataModule(root=str(tmp_path), download=False)
    with pytest.raises(DatasetMissingError, match=str(tmp_path / "cifar" / "cifar-10-batches-py")):
        dm.prepare_data()


def test_loaders_shard_without_overlap(dm):
    class FakeTrainer:
        def __init__(self, rank):
            self.global_rank, self.world_size = rank, 2

    loaders = []
    for rank in (0, 1):
        dm.trainer = FakeTrainer(rank)
        loaders.append(dm.val_dataloader())
    dm.trainer = None
    sizes = [sum(len(b[1]) for b in loader) for loader in loaders]
    assert sizes == [250, 250]


def test_data_order_follows_seed_everything_unless_pinned(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    assert CIFARDataModule(download=False).data_seed() == 3
    assert CIFARDataModule(download=False, seed=11).data_seed() == 11


def test_cifar100_layout_loads_fine_labels(tmp_path):
    """CIFAR-100's official layout (train/test/meta, fine_labels) built by hand: no public sample exists."""
    import pickle

    folder = tmp_path / "cifar" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        record = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": list(range(n)),
                  "coarse_labels": [i % 20 for i in range(n)], "filenames": [f"{i}.png" for i in range(n)]}
        (folder / split).write_bytes(pickle.dumps(record, protocol=2))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)],
                                                "coarse_label_names": [f"s{i}" for i in range(20)]}, protocol=2))
    dm = CIFARDataModule(dataset="cifar100", root=str(tmp_path), val_size=10, num_workers=0, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 100 and len(dm.classes) == 100
    assert len(dm.train_set) == 50 and len(dm.val_set) == 10 and len(dm.test_set) == 20
    assert sorted(dm.train_set.labels.tolist() + dm.val_set.labels.tolist()) == list(range(60))
