"""Feinman et al. 2017: the uncertainty formula, our BIM vs torchattacks, MC dropout, the kernel density."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchattacks

from lit_papers.papers.feinman_detection.attacks import bim
from lit_papers.papers.feinman_detection.detector import ClassDensity
from lit_papers.papers.feinman_detection.model import bayesian_uncertainty, mc_dropout_probs
from lit_papers.papers.feinman_detection.module import FeinmanDetectionLitModule
from tests.attacks.victims import records, tiny_victim


def test_uncertainty_matches_a_float64_loop_of_the_papers_formula():
    probs = torch.rand(50, 7, 10).softmax(dim=2)
    ours = bayesian_uncertainty(probs)
    for b in range(7):
        y = [probs[t, b].double().tolist() for t in range(50)]
        first = sum(sum(v * v for v in yt) for yt in y) / 50  # 1/T sum_t y_t^T y_t
        mean = [sum(y[t][k] for t in range(50)) / 50 for k in range(10)]
        assert math.isclose(float(ours[b]), first - sum(m * m for m in mean), rel_tol=1e-5, abs_tol=1e-7)
    assert torch.allclose(bayesian_uncertainty(probs[:1].repeat(5, 1, 1)), torch.zeros(7), atol=1e-7)  # no spread


def test_our_bim_equals_torchattacks_bim_and_bim_a_stops_early():
    victim = tiny_victim()
    x, y = records("test_batch", 16)
    library = torchattacks.BIM(victim, eps=0.03, alpha=0.005, steps=6)(x, y)
    ours = bim(victim, x, y, eps=0.03, alpha=0.005, steps=6)
    assert (ours - library).abs().max() < 1e-6
    assert (ours - x).abs().max() <= 0.03 + 1e-6 and 0 <= float(ours.min()) and float(ours.max()) <= 1
    early = bim(victim, x, y, eps=0.03, alpha=0.005, steps=6, early_stop=True)
    with torch.no_grad():
        fooled = victim(early).argmax(dim=1) != y
    # a BIM-A image moves less than (or as much as) its BIM-B counterpart
    assert ((early - x).abs().flatten(1).sum(1) <= (ours - x).abs().flatten(1).sum(1) + 1e-5).all()
    assert fooled.any()


def test_mc_dropout_samples_differ_and_batchnorm_stays_frozen():
    victim = tiny_victim(network="dropout")
    x, _ = records("test_batch", 8)
    stats = victim.network.backbone.stem[1].running_mean.clone()
    probs = mc_dropout_probs(victim, x, samples=5)
    assert probs.shape == (5, 8, 10) and (probs[0] - probs[1]).abs().max() > 1e-4
    assert torch.equal(stats, victim.network.backbone.stem[1].running_mean) and not victim.training
    assert not any(m.training for m in victim.modules())  # dropout switched back off
    assert (bayesian_uncertainty(probs) > 0).all()


def test_class_density_is_the_gaussian_kde_formula():
    rng = np.random.default_rng(0)
    feats, labels = rng.normal(size=(40, 3)), np.repeat(np.arange(2), 20)
    density = ClassDensity(feats, labels, bandwidth=0.26, num_classes=2)
    query, predicted = rng.normal(size=(5, 3)), np.array([0, 1, 1, 0, 1])
    ours = density.score(query, predicted)
    h, d = 0.26, 3
    for q, k, value in zip(query, predicted, ours):
        own = feats[labels == k]
        kernel = np.exp(-((own - q) ** 2).sum(1) / (2 * h * h)).mean() / (2 * math.pi * h * h) ** (d / 2)
        assert math.isclose(value, math.log(kernel), rel_tol=1e-9)


def test_module_gives_an_auc_per_attack():
    x, y = records("test_batch", 120)
    module = FeinmanDetectionLitModule(victim=tiny_victim(network="dropout"), num_images=None, mc_samples=8,
                                       attacks={"fgsm": {"eps": 0.05}, "bim-a": {"eps": 0.05, "alpha": 0.01, "steps": 5}})
    module.kde_train = records("data_batch_1", 300)
    with torch.no_grad():
        keep = module.victim(x).argmax(1) == y
    out = module.run_attack(x[keep], y[keep])
    for key in ("fgsm", "bim_a"):
        assert 0.0 <= out[f"auc_{key}"] <= 1.0 and out[f"auc_{key}_n"] > 0 and 0 < out[f"attack_success_{key}"] <= 1
        assert out[f"l2_{key}"] > 0
        assert 0.0 < out[f"auc_{key}_ci95"] < 0.5 and out[f"auc_{key}_images"] == out[f"auc_{key}_n"] // 3
    assert set(module.roc) == {"fgsm", "bim-a"}


def test_kde_images_are_a_seeded_sample_across_classes_of_a_class_ordered_folder():
    """An image folder lists its images class by class: the first n would be one class, and the kernel density
    of every other class would have no image (the run on the CIFAR-10 JPEG folder stopped on exactly that)."""
    labels = np.repeat(np.arange(10), 100)  # 1000 images ordered by class
    images = np.stack([np.full((4, 4, 3), (i // 256, i % 256, 0), dtype=np.uint8) for i in range(1000)])
    dataset = type("Folder", (), {"images": images, "labels": labels, "__len__": lambda self: 1000})()
    module = FeinmanDetectionLitModule(victim=tiny_victim(network="dropout"), kde_train_images=200, attack_seed=3)
    x, y = module._sample_training_images(dataset)
    assert x.shape == (200, 3, 4, 4) and set(y.tolist()) == set(range(10))
    index = ((x[:, 0, 0, 0] * 255).round() * 256 + (x[:, 1, 0, 0] * 255).round()).long()  # the image's number
    assert len(set(index.tolist())) == 200 and torch.equal(torch.as_tensor(labels)[index], y.cpu())  # paired
    again, _ = module._sample_training_images(dataset)
    assert torch.equal(x, again)  # seeded by attack_seed
    module.attack_seed = 4
    assert not torch.equal(x, module._sample_training_images(dataset)[0])


def _hanley_mcneil_ci95(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982), the standard error of an AUC from independent rows: the oracle for the bootstrap."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc ** 2) + (n_neg - 1) * (q2 - auc ** 2)) / (n_pos * n_neg)
    return 1.96 * var ** 0.5


def test_auc_interval_matches_hanley_mcneil_on_independent_rows():
    from sklearn.metrics import roc_auc_score

    from lit_papers.papers.feinman_detection.detector import bootstrap_auc_ci95

    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(300), np.ones(150)]
    score = rng.normal(size=450) + 1.0 * y            # AUC about 0.76
    auc = roc_auc_score(y, score)
    ours = bootstrap_auc_ci95(y, score, np.arange(450), resamples=2000)
    oracle = _hanley_mcneil_ci95(auc, 150, 300)
    assert abs(ours - oracle) / oracle < 0.12, (ours, oracle)


def test_auc_interval_resamples_images_not_rows():
    """Three identical rows per image carry one image's information: grouped by image, the interval is that of the
    single rows (to the draw: the same seed gives the same resampled images); treating the copies as independent
    rows would make it about sqrt(3) narrower."""
    from lit_papers.papers.feinman_detection.detector import bootstrap_auc_ci95

    rng = np.random.default_rng(2)
    y = np.r_[np.zeros(80), np.ones(80)]
    score = rng.normal(size=160) + y
    single = bootstrap_auc_ci95(y, score, np.arange(160), resamples=500)
    y3, s3 = np.tile(y, 3), np.tile(score, 3)
    grouped = bootstrap_auc_ci95(y3, s3, np.tile(np.arange(160), 3), resamples=500)
    as_rows = bootstrap_auc_ci95(y3, s3, np.arange(480), resamples=500)
    assert grouped == pytest.approx(single, rel=1e-9)
    assert as_rows < 0.75 * grouped


def test_detector_auc_reports_intervals_over_test_images():
    from lit_papers.papers.feinman_detection.detector import detector_auc

    rng = np.random.default_rng(3)
    k = 60                                                   # images; rows: clean, noisy, adversarial
    target = np.r_[np.zeros(2 * k), np.ones(k)]
    feats = rng.normal(size=(3 * k, 2)) + np.c_[target, -target]
    train_image = np.zeros(k, dtype=bool)
    train_image[: k // 2] = True
    out = detector_auc(feats, target, np.tile(train_image, 3), groups=np.tile(np.arange(k), 3), bootstrap=300)
    assert out["n"] == 3 * (k - k // 2) and out["n_images"] == k - k // 2
    for key in ("auc", "auc_bu", "auc_kd"):
        assert 0.0 < out[f"{key}_ci95"] < 0.3
    assert "auc_ci95" not in detector_auc(feats, target, np.tile(train_image, 3), bootstrap=0)


def test_auc_by_ranks_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from lit_papers.papers.feinman_detection.detector import auc_by_ranks

    rng = np.random.default_rng(4)
    for _ in range(20):
        y = rng.integers(0, 2, size=57)
        y[:2] = [0, 1]
        score = rng.integers(0, 6, size=57).astype(float)  # many ties
        assert auc_by_ranks(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
