"""The detector of Feinman et al. 2017 (sec. 3.1, 4.3) with scikit-learn.

* :class:`ClassDensity`: one Gaussian ``KernelDensity(bandwidth=sigma)`` per class on the last hidden layer of the
  training images; the feature of an input is the log density under the class the model *predicts* for it
  (eq. 2 up to the kernel's normalising constant, the same for every input, so z-scoring removes it).
* :func:`detector_auc`: z-score [uncertainty, log density] on the detector's training half, logistic
  regression (adversarial = 1 vs clean and noisy = 0), ROC-AUC on the other half; also each feature alone.
"""

from __future__ import annotations

import numpy as np
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


def detector_auc(features: np.ndarray, is_adversarial: np.ndarray, train: np.ndarray) -> dict:
    """``features`` (N, 2) = [uncertainty, log density], ``is_adversarial`` (N,) {0, 1}, ``train`` (N,) bool: the
    detector's training rows. Returns AUCs (combined, each feature alone; test rows) and the combined ROC curve."""
    scaler = StandardScaler().fit(features[train])
    z = scaler.transform(features)
    lr = LogisticRegression().fit(z[train], is_adversarial[train])
    test = ~train
    score = lr.predict_proba(z[test])[:, 1]
    fpr, tpr, _ = roc_curve(is_adversarial[test], score)
    return {"auc": roc_auc_score(is_adversarial[test], score),
            "auc_bu": roc_auc_score(is_adversarial[test], z[test, 0]),   # higher uncertainty -> adversarial
            "auc_kd": roc_auc_score(is_adversarial[test], -z[test, 1]),  # lower density -> adversarial
            "n": int(test.sum()), "fpr": fpr.tolist(), "tpr": tpr.tolist()}
