"""FeinmanDetectionLitModule: detect adversarial samples from dropout uncertainty and kernel density
(Feinman et al. 2017, sec. 4).

On the first ``num_images`` test images the (dropout) victim classifies correctly, each attack of ``attacks``
makes adversarials; images where it fails (still correctly classified) are dropped, as in the paper. For the
others, three rows each: clean (negative), Gaussian-noised (negative; the noise's std is chosen so that its
expected L2 norm equals the attack's mean L2 perturbation, the paper's principle for its noise scale) and
adversarial (positive). Features: Bayesian uncertainty from ``mc_samples`` dropout passes and the log kernel
density (``bandwidth``) of the last hidden layer under the predicted class, fitted on ``kde_train_images``
training images of the datamodule. A logistic regression on z-scored features is trained on half of the images
(``attack_seed``) and scored on the other half.

Logged per attack ``<a>`` (fgsm, bim_a, bim_b, jsma, cw): ``test/auc_<a>`` (combined; ``_n`` = test rows),
``test/auc_bu_<a>``, ``test/auc_kd_<a>`` (one feature alone), ``test/attack_success_<a>`` (``_n``),
``test/l2_<a>`` (mean L2 perturbation, pixel values in [0, 1]); each AUC's 95 % half-width ``..._ci95`` over the
test images (bootstrap, an image's clean / noisy / adversarial rows together) and ``test/auc_<a>_images``. ROC curves: ``<run dir>/roc.json``, ``roc.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lit_papers.attacks.module import AttackLitModule
from lit_papers.attacks.plots import line_plot
from lit_papers.attacks.victim import Victim
from lit_papers.papers.feinman_detection.attacks import build_attacks
from lit_papers.papers.feinman_detection.detector import ClassDensity, detector_auc
from lit_papers.papers.feinman_detection.model import bayesian_uncertainty, mc_dropout_probs

DEFAULT_ATTACKS = {"fgsm": {"eps": 0.05}, "bim-a": {"eps": 0.05, "alpha": 0.005, "steps": 50},
                   "bim-b": {"eps": 0.05, "alpha": 0.005, "steps": 50}, "jsma": {"theta": 1.0, "gamma": 0.1},
                   "cw": {"c": 1.0, "kappa": 0.0, "steps": 100, "lr": 0.01}}


class FeinmanDetectionLitModule(AttackLitModule):
    def __init__(self, *, victim: Victim, num_images: int | None = 1000, attacks: dict[str, dict] | None = None,
                 mc_samples: int = 50, bandwidth: float = 0.26, kde_train_images: int = 5000, attack_seed: int = 0,
                 chunk: int = 100, sample_seed: int | None = None, optimizer: OptimizerCallable | None = None,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(victim=victim, num_images=num_images, sample_seed=sample_seed, optimizer=optimizer,
                         scheduler=scheduler)
        self.save_hyperparameters(ignore=["victim", "optimizer", "scheduler"])
        self.attack_settings = dict(DEFAULT_ATTACKS if attacks is None else attacks)
        self.mc_samples, self.bandwidth, self.kde_train_images = mc_samples, bandwidth, kde_train_images
        self.attack_seed, self.chunk = attack_seed, chunk
        self.kde_train: tuple[torch.Tensor, torch.Tensor] | None = None  # (images in [0, 1], labels); else datamodule's
        self.roc: dict = {}

    def collect(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        with torch.no_grad():
            keep = self.victim.eval()(images).argmax(dim=1) == labels
        if keep.any():
            super().collect(images[keep], labels[keep])

    def _kde_training_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kde_train is not None:
            return self.kde_train
        dataset = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        if dataset is None:
            raise ValueError("FeinmanDetectionLitModule: the kernel densities need training images: a datamodule with "
                             "`train_set` (CIFARDataModule) or module.kde_train = (images, labels)")
        return self._sample_training_images(dataset)

    def _sample_training_images(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniform random subset of ``kde_train_images`` stored training images (seed ``attack_seed``): an image
        folder is ordered class by class, so its first n images would cover one or two classes only."""
        n = min(self.kde_train_images, len(dataset))
        pick = np.sort(np.random.default_rng(self.attack_seed).permutation(len(dataset))[:n])
        # the stored uint8 training images (N, H, W, 3), not dataset[i]: that would apply the random augmentation
        x = torch.from_numpy(np.ascontiguousarray(dataset.images[pick].transpose(0, 3, 1, 2))).float() / 255.0
        return x.to(self.device), torch.as_tensor(np.asarray(dataset.labels)[pick]).to(self.device)

    @torch.no_grad()
    def _hidden(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.victim.features(x[i:i + 500]) for i in range(0, len(x), 500)]
        hidden = torch.cat([h for h, _ in parts]).double().cpu().numpy()
        return hidden, torch.cat([lg for _, lg in parts]).argmax(dim=1).cpu().numpy()

    def _features(self, x: torch.Tensor, density: ClassDensity) -> np.ndarray:
        bu = bayesian_uncertainty(mc_dropout_probs(self.victim, x, self.mc_samples)).double().cpu().numpy()
        hidden, predicted = self._hidden(x)
        return np.stack([bu, density.score(hidden, predicted)], axis=1)  # (N, 2)

    def run_attack(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        victim = self.victim.eval()
        x_train, y_train = self._kde_training_images()
        hidden, _ = self._hidden(x_train)
        density = ClassDensity(hidden, y_train.cpu().numpy(), bandwidth=self.bandwidth,
                               num_classes=int(victim(images[:1]).shape[1]))
        gen = torch.Generator().manual_seed(self.attack_seed)
        out, self.roc = {}, {}
        for name, attack in build_attacks(victim, self.attack_settings).items():
            key = name.replace("-", "_")
            adv = torch.cat([attack(images[i:i + self.chunk], labels[i:i + self.chunk])
                             for i in range(0, len(images), self.chunk)]).detach()
            victim.eval()
            with torch.no_grad():
                success = victim(adv).argmax(dim=1) != labels
            k = int(success.sum())
            out[f"attack_success_{key}"], out[f"attack_success_{key}_n"] = k / len(images), len(images)
            if k < 4:
                out[f"auc_{key}"] = float("nan")
                continue
            x, a = images[success], adv[success]
            l2 = (a - x).flatten(1).norm(dim=1)
            sigma = float(l2.mean()) / math.sqrt(x[0].numel())  # E|N(0, s^2 I_D)| ~ s sqrt(D)
            noisy = (x + sigma * torch.randn(x.shape, generator=gen).to(x.device)).clamp(0.0, 1.0)
            feats = np.concatenate([self._features(s, density) for s in (x, noisy, a)])  # rows: clean, noisy, adv
            target = np.concatenate([np.zeros(2 * k), np.ones(k)])
            half = torch.randperm(k, generator=gen)[: k // 2].numpy()
            train_image = np.zeros(k, dtype=bool)
            train_image[half] = True
            # an image's three rows are resampled together for the intervals (groups = image index)
            result = detector_auc(feats, target, np.tile(train_image, 3), groups=np.tile(np.arange(k), 3))
            out.update({f"auc_{key}": result["auc"], f"auc_{key}_n": result["n"], f"auc_bu_{key}": result["auc_bu"],
                        f"auc_kd_{key}": result["auc_kd"], f"l2_{key}": float(l2.mean()), f"noise_std_{key}": sigma})
            out.update({f"{name}_{key}_ci95": result[f"{name}_ci95"] for name in ("auc", "auc_bu", "auc_kd")})
            out[f"auc_{key}_images"] = result["n_images"]
            self.roc[name] = {"fpr": result["fpr"], "tpr": result["tpr"], "auc": result["auc"], "n": result["n"]}
        if self._trainer is not None and self.trainer.is_global_zero and self.roc:
            run = Path(self.trainer.default_root_dir)
            run.mkdir(parents=True, exist_ok=True)
            (run / "roc.json").write_text(json.dumps(self.roc))
            roc_picture(self.roc, run / "roc.png")
        return out


def roc_picture(roc: dict, path: Path) -> Path:
    return line_plot({f"{name} (AUC {r['auc']:.3f})": (r["fpr"], r["tpr"]) for name, r in roc.items()}, path,
                     title="Feinman et al. detector (uncertainty + density, logistic regression)",
                     xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1),
                     diagonal=True, legend="lower right")
