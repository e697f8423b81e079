"""The detector of Feinman et al. 2017 (sec. 3.1, 4.3) with scikit-learn.

* :class:`ClassDensity`: one Gaussian ``KernelDensity(bandwidth=sigma)`` per class on the last hidden layer of the
  training images; the feature of an input is the log density under the class the model *predicts* for it
  (eq. 2 up to the kernel's normalising constant, the same for every input, so z-scoring removes it).
* :func:`detector_auc`: z-score [uncertainty, log density] on the detector's training half, logistic
  regression (adversarial = 1 vs clean and noisy = 0), ROC-AUC on the other half; also each feature alone.
* :func:`bootstrap_auc_ci95`: the 95 % half-width of an AUC over the test *images* (an image's clean, noisy and
  adversarial rows are resampled together: they are not independent draws).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.neighbors import KernelDensity
from sklearn.preprocessing import StandardScaler


class ClassDensity:
    def __init__(self, features: np.ndarray, labels: np.ndarray, *, bandwidth: float = 0.26,
                 num_classes: int = 10) -> None:
        self.kdes = {}
        for k in range(num_classes):
            own = features[labels == k]
            if len(own) == 0:
                raise ValueError(f"class {k} has no training image for its kernel density (use more KDE images)")
            self.kdes[k] = KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(own)

    def score(self, features: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """log density of each row of ``features`` (N, D) under the KDE of its ``predicted`` class (N,)."""
        out = np.empty(len(features))
        for k, kde in self.kdes.items():
            rows = predicted == k
            if rows.any():
                out[rows] = kde.score_samples(features[rows])
        return out


def detector_auc(features: np.ndarray, is_adversarial: np.ndarray, train: np.ndarray, *,
                 groups: np.ndarray | None = None, bootstrap: int = 1000, seed: int = 0) -> dict:
    """``features`` (N, 2) = [uncertainty, log density], ``is_adversarial`` (N,) {0, 1}, ``train`` (N,) bool: the
    detector's training rows; ``groups`` (N,): the image each row comes from (default: every row its own). Returns
    AUCs (combined, each feature alone; test rows), their 95 % half-widths over ``bootstrap`` resamples of the test
    images (``auc_ci95``, ...; 0 resamples: none), ``n`` test rows, ``n_images`` test images, and the combined ROC."""
    scaler = StandardScaler().fit(features[train])
    z = scaler.transform(features)
    lr = LogisticRegression().fit(z[train], is_adversarial[train])
    test = ~train
    score = lr.predict_proba(z[test])[:, 1]
    y = is_adversarial[test]
    scores = {"auc": score, "auc_bu": z[test, 0],     # higher uncertainty -> adversarial
              "auc_kd": -z[test, 1]}                 # lower density -> adversarial
    fpr, tpr, _ = roc_curve(y, score)
    group = (np.arange(len(features)) if groups is None else np.asarray(groups))[test]
    out = {key: float(roc_auc_score(y, s)) for key, s in scores.items()}
    if bootstrap:
        out.update({f"{key}_ci95": bootstrap_auc_ci95(y, s, group, resamples=bootstrap, seed=seed)
                    for key, s in scores.items()})
    return {**out, "n": int(test.sum()), "n_images": int(len(np.unique(group))), "fpr": fpr.tolist(),
            "tpr": tpr.tolist()}


def bootstrap_auc_ci95(y: np.ndarray, score: np.ndarray, groups: np.ndarray, *, resamples: int = 1000,
                       seed: int = 0) -> float:
    """95 % half-width (1.96 x the bootstrap standard deviation) of ROC-AUC(``y``, ``score``) when the sampling unit
    is the group: each resample draws as many groups as there are, with replacement, and takes all their rows.
    A resample with one class only has no AUC and is drawn again (rare unless a group holds one class)."""
    y, score, groups = np.asarray(y), np.asarray(score), np.asarray(groups)
    ids, index = np.unique(groups, return_inverse=True)
    rows = [np.flatnonzero(index == g) for g in range(len(ids))]
    if len(ids) < 2 or len(np.unique(y)) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    values, tries = [], 0
    while len(values) < resamples:
        tries += 1
        if tries > 20 * resamples:
            raise ValueError("bootstrap_auc_ci95: almost every resample holds one class only; no interval")
        pick = np.concatenate([rows[g] for g in rng.integers(0, len(ids), size=len(ids))])
        if len(np.unique(y[pick])) == 2:
            values.append(auc_by_ranks(y[pick], score[pick]))
    return float(1.96 * np.std(values, ddof=1))


def auc_by_ranks(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties get average ranks, i.e. count one half): the same number as
    ``sklearn.metrics.roc_auc_score`` for binary ``y``, without its per-call validation, which made the 1000-resample
    bootstrap cost minutes. ``y``: 0/1 or bool, 1 = positive."""
    positive = np.asarray(y) == 1
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
