"""CIFARDataModule corruptions (Zhang et al. 2017, sec. 3), the labelled subset and ``normalization: none``.

Every corruption must be deterministic per example and seed: the same record gets the same corrupted label /
permutation / Gaussian image whatever the split, the other records loaded, or the data order. Checked on the
real 500-per-batch CIFAR-10 sample (2500 training records, 500 test records).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_papers.data.cifar import (
    TEST_RECORDS,
    TRAIN_RECORDS,
    UNLABELLED,
    CIFARDataModule,
    corrupt_labels,
    gaussian_images,
    labelled_subset,
    load_cifar,
    random_pixels,
    shuffle_pixels,
)


def make(**kwargs) -> CIFARDataModule:
    kwargs.setdefault("val_size", 500)
    dm = CIFARDataModule(num_workers=0, download=False, **kwargs)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def raw(shared_data):
    return load_cifar(shared_data / "cifar" / "cifar-10-batches-py")


@pytest.fixture(scope="module")
def clean():
    return make(augment=False)


def index_images(n: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 images whose pixel k reads (k % 256, k // 256, image index): a permutation is readable."""
    k = np.arange(1024)
    one = np.stack([k % 256, k // 256, np.zeros(1024, int)], axis=-1).reshape(32, 32, 3)
    out = np.repeat(one[None], n, axis=0).astype(np.uint8)
    out[..., 2] = np.arange(n)[:, None, None]
    return out


def read_permutation(images: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) permuted index images -> (n, 1024) the source pixel of each output pixel."""
    flat = images.reshape(len(images), 1024, 3).astype(int)
    return flat[..., 0] + 256 * flat[..., 1]


# -- labels ------------------------------------------------------------------------------------------------
def test_label_noise_rates_nesting_and_per_record_determinism():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 10, 4000)
    records = np.arange(4000)
    assert np.array_equal(corrupt_labels(labels, records, p=0.0, num_classes=10, seed=0), labels)
    changed = {}
    for p in (0.2, 0.6, 1.0):
        out = corrupt_labels(labels, records, p=p, num_classes=10, seed=0)
        changed[p] = out != labels
        # corrupted with probability p to a uniform class: changed with probability 0.9 p (binomial, 4000 draws)
        sd = np.sqrt(0.9 * p * (1 - 0.9 * p) / 4000)
        assert abs(changed[p].mean() - 0.9 * p) < 4 * sd + 1e-9, (p, changed[p].mean())
    assert not (changed[0.2] & ~changed[0.6]).any(), "records corrupted at p=0.2 must stay corrupted at p=0.6"
    full = corrupt_labels(labels, records, p=1.0, num_classes=10, seed=0)
    # p = 1: labels independent of the truth and uniform over the classes (chi-square, 9 dof, far tail)
    counts = np.bincount(full, minlength=10)
    assert ((counts - 400) ** 2 / 400).sum() < 40
    assert abs((full == labels).mean() - 0.1) < 0.02
    mid = corrupt_labels(labels, records, p=0.6, num_classes=10, seed=0)
    assert np.array_equal(mid[changed[0.6]], full[changed[0.6]]), "a corrupted record gets the same class at any p"
    # per record: a subset, a reordering, or one record alone gets the very same labels
    pick = rng.permutation(4000)[:300]
    assert np.array_equal(corrupt_labels(labels[pick], pick, p=0.6, num_classes=10, seed=0), mid[pick])
    assert corrupt_labels(labels[7:8], records[7:8], p=0.6, num_classes=10, seed=0)[0] == mid[7]
    other = corrupt_labels(labels, records, p=0.6, num_classes=10, seed=1)
    assert (other != mid).mean() > 0.3, "another corruption_seed corrupts other records"


def test_datamodule_corrupts_the_training_split_only(clean):
    noisy = make(augment=False, label_noise=1.0)
    assert np.array_equal(noisy.train_set.records, clean.train_set.records)
    agree = (noisy.train_set.labels == clean.train_set.labels).float().mean().item()
    assert abs(agree - 0.1) < 0.03, "p = 1: about 1 in 10 labels right by chance"
    assert torch.equal(noisy.val_set.labels, clean.val_set.labels), "val keeps the true labels"
    assert torch.equal(noisy.test_set.labels, clean.test_set.labels), "test keeps the true labels"
    assert np.array_equal(noisy.train_set.images, clean.train_set.images)
    corruption = noisy.data_description["corruption"]
    assert corruption["changed_labels"] == int((noisy.train_set.labels != clean.train_set.labels).sum())


def test_a_records_noisy_label_does_not_depend_on_the_split():
    a = make(label_noise=0.5, corruption_seed=3)
    b = make(label_noise=0.5, corruption_seed=3, val_size=1000, split_seed=7)
    common, ia, ib = np.intersect1d(a.train_set.records, b.train_set.records, return_indices=True)
    assert len(common) > 1000
    assert torch.equal(a.train_set.labels[ia], b.train_set.labels[ib])
    c = make(label_noise=0.5, corruption_seed=4)
    assert not torch.equal(a.train_set.labels, c.train_set.labels)


# -- images ------------------------------------------------------------------------------------------------
def test_shuffled_pixels_is_one_permutation_for_all_images():
    images = index_images(5)
    perm = read_permutation(shuffle_pixels(images, seed=0))
    assert (perm == perm[0]).all(), "the same permutation for every image"
    assert sorted(perm[0]) == list(range(1024)) and (perm[0] != np.arange(1024)).mean() > 0.99
    assert (shuffle_pixels(images, seed=0)[..., 2] == images[..., 2]).all(), "a pixel's channels move together"
    assert not np.array_equal(read_permutation(shuffle_pixels(images, seed=1))[0], perm[0])


def test_shuffled_pixels_datamodule_train_and_test_share_the_permutation(raw, clean):
    dm = make(augment=False, image_corruption="shuffled_pixels")
    perm = read_permutation(shuffle_pixels(index_images(1), seed=0))[0]
    x_train, _ = raw["train"]
    x_test, _ = raw["test"]
    expected = x_train[dm.train_set.records].reshape(-1, 1024, 3)[:, perm].reshape(-1, 32, 32, 3)
    assert np.array_equal(dm.train_set.images, expected)
    assert np.array_equal(dm.test_set.images, x_test.reshape(-1, 1024, 3)[:, perm].reshape(-1, 32, 32, 3))
    assert torch.equal(dm.train_set.labels, clean.train_set.labels)


def test_random_pixels_is_a_permutation_per_image_keyed_by_the_record():
    images = index_images(6)
    records = np.array([10, 11, 12, 13, 14, 15])
    perm = read_permutation(random_pixels(images, records, seed=0, split=TRAIN_RECORDS))
    assert all(sorted(row) == list(range(1024)) for row in perm)
    assert len({row.tobytes() for row in perm}) == 6, "every image its own permutation"
    # per record: the same record alone, or among others in another order, gets the same permutation
    alone = read_permutation(random_pixels(images[3:4], records[3:4], seed=0, split=TRAIN_RECORDS))
    assert np.array_equal(alone[0], perm[3])
    swapped = read_permutation(random_pixels(images[::-1], records[::-1], seed=0, split=TRAIN_RECORDS))
    assert np.array_equal(swapped[::-1], perm)
    assert not np.array_equal(read_permutation(random_pixels(images, records, seed=0, split=TEST_RECORDS)), perm)
    assert not np.array_equal(read_permutation(random_pixels(images, records, seed=2, split=TRAIN_RECORDS)), perm)


def test_random_pixels_datamodule_keeps_each_images_pixels(raw):
    dm = make(augment=False, image_corruption="random_pixels")
    x_train, _ = raw["train"]
    original = x_train[dm.train_set.records].reshape(-1, 1024, 3)
    permuted = dm.train_set.images.reshape(-1, 1024, 3)

    def sort_rows(a):
        return np.sort(a.view([("r", "u1"), ("g", "u1"), ("b", "u1")])[..., 0], axis=1)

    assert np.array_equal(sort_rows(permuted), sort_rows(original)), "each image keeps its own pixels"
    assert (permuted != original).any(axis=-1).mean() > 0.9
    other = make(augment=False, image_corruption="random_pixels", val_size=1000, split_seed=3)
    common, ia, ib = np.intersect1d(dm.train_set.records, other.train_set.records, return_indices=True)
    assert np.array_equal(dm.train_set.images[ia], other.train_set.images[ib]), "keyed by the record, not the split"


def test_gaussian_images_have_the_datas_channel_statistics(raw):
    dm = make(augment=False, image_corruption="gaussian", normalization="none")
    x_train, _ = raw["train"]
    real = x_train[dm.train_set.records].reshape(-1, 3).astype(np.float64)
    fake = dm.train_set.images.reshape(-1, 3).astype(np.float64)
    assert dm.train_set.images.dtype == np.float32
    # 2000 * 1024 draws per channel: the sample mean is within ~0.05 grey levels, the std within ~0.04
    assert np.allclose(fake.mean(axis=0), real.mean(axis=0), atol=0.5)
    assert np.allclose(fake.std(axis=0), real.std(axis=0), atol=0.5)
    assert fake.min() < 0 and fake.max() > 255, "not clipped: the exact Gaussian"
    assert abs(np.corrcoef(fake[:, 0], real[:, 0])[0, 1]) < 0.01, "independent of the real pixels"
    assert abs(np.corrcoef(fake[:, 0], fake[:, 1])[0, 1]) < 0.01, "channels drawn independently"
    image, _ = dm.train_set[0]
    assert torch.allclose(image, torch.from_numpy(dm.train_set.images[0].transpose(2, 0, 1) / 255.0))
    records = dm.train_set.records[:4]
    again = gaussian_images(records, mean=real.mean(axis=0), std=real.std(axis=0), seed=0, split=TRAIN_RECORDS)
    assert np.allclose(again, dm.train_set.images[:4], atol=1e-3)
    assert not np.allclose(dm.test_set.images[:4], again, atol=1.0), "test images are other draws"


# -- labelled subset (semi-supervised) ----------------------------------------------------------------------
def test_labelled_per_class_keeps_a_balanced_seeded_subset(clean):
    dm = make(augment=False, labelled_per_class=20)
    labels, true = dm.train_set.labels, clean.train_set.labels
    kept = labels != UNLABELLED
    assert kept.sum() == 200
    assert np.bincount(labels[kept].numpy(), minlength=10).tolist() == [20] * 10
    assert torch.equal(labels[kept], true[kept]), "kept labels are the true ones"
    assert (labels[~kept] == -1).all()
    assert torch.equal(dm.val_set.labels, clean.val_set.labels) and torch.equal(dm.test_set.labels,
                                                                                 clean.test_set.labels)
    assert dm.data_description["corruption"]["labelled"] == 200
    again = make(augment=False, labelled_per_class=20)
    assert torch.equal(again.train_set.labels, labels)
    reseeded = make(augment=False, labelled_per_class=20, corruption_seed=1)
    assert not torch.equal(reseeded.train_set.labels, labels)
    # the kept indices of an independent oracle: per class, a class's count equals the request
    idx = labelled_subset(np.array([0, 1, 0, 1, 0, 1]), per_class=2, num_classes=2, seed=0)
    assert len(idx) == 4 and sorted(np.array([0, 1, 0, 1, 0, 1])[idx].tolist()) == [0, 0, 1, 1]


def test_labelled_per_class_beyond_a_class_count_is_an_error():
    with pytest.raises(ValueError, match=r"labelled_per_class=300: the training split has fewer images"):
        make(labelled_per_class=300)


# -- normalisation none, eval_train, bad options ------------------------------------------------------------
def test_normalization_none_gives_back_the_exact_uint8_values(clean):
    dm = make(augment=False, normalization="none")
    for dataset in (dm.train_set, dm.val_set, dm.test_set):
        batch = torch.stack([dataset[i][0] for i in range(len(dataset))])  # (N, 3, 32, 32)
        assert 0.0 <= batch.min() and batch.max() <= 1.0
        exact = torch.from_numpy(dataset.images.transpose(0, 3, 1, 2).astype(np.int64))
        assert torch.equal(torch.round(batch * 255).long(), exact)
    assert torch.equal(dm.train_set.labels, clean.train_set.labels)


def test_eval_train_adds_the_training_split_as_a_second_val_loader():
    dm = make(label_noise=1.0, eval_train=True)  # augment on: the train_eval copy is not augmented
    assert dm.val_loader_names == ["val", "train_eval"]
    val, train_eval = dm.val_dataloader()
    assert len(val.dataset) == 500 and train_eval.dataset is dm.train_eval_set
    assert torch.equal(train_eval.dataset.labels, dm.train_set.labels), "the corrupted labels as trained on"
    assert torch.equal(train_eval.dataset[(3, 0)][0], train_eval.dataset[(3, 1)][0]), "no augmentation"
    only = make(val_size=0, eval_train=True)
    assert only.val_loader_names == ["train_eval"] and len(only.val_dataloader().dataset) == 2500


@pytest.mark.parametrize("kwargs, match", [
    (dict(label_noise=1.5), r"label_noise=1.5: a probability"),
    (dict(image_corruption="noise"), r"image_corruption='noise': one of"),
    (dict(label_noise=0.5, labelled_per_class=4), r"not supported"),
])
def test_bad_options_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CIFARDataModule(download=False, **kwargs)
