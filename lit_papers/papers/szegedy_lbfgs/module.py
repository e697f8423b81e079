"""SzegedyLBFGSLitModule: targeted box-constrained L-BFGS adversarials (Szegedy et al. 2014, sec. 4.1) on the
first ``num_images`` test images the victim classifies correctly, each with a random target label != its label
(seed ``attack_seed``).

Logged (fractions; the card scales to percent where it says so):
* ``test/success_rate`` (``_n`` = images attacked): the minimiser is classified as the target;
* ``test/distortion``: mean over successes of sqrt(mean r^2) (pixel values in [0, 1]; ``_ci95``, ``_n``),
  ``test/distortion_median``; context: the JPEG q75 error of the images themselves is RMS ~0.030 (PSNR 30.5 dB,
  ../shared/data/MANIFEST.md);
* ``test/transfer_misclassified``, ``test/transfer_target`` (``_n`` = successes): the adversarials fed to
  ``transfer_victim`` (another network): not classified as the true label / classified as the target
  (the paper's cross-model generalisation, sec. 4.2 Table 2, counts misclassifications);
  ``test/transfer_clean_acc``: the other network on the clean versions of the same images, and
  ``test/transfer_excess`` (``_ci95`` paired over images, ``_n``): misclassified adversarial minus misclassified
  clean, the part of ``transfer_misclassified`` the perturbation causes (a weak second network misclassifies
  many clean images too, so ``transfer_misclassified`` alone does not show transfer);
* ``test/attacks_per_s``: images attacked per second (the whole line search).
A grid of originals / perturbations (scaled) / adversarials goes to ``<run dir>/lbfgs_grid.png``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lit_papers.attacks.module import AttackLitModule
from lit_papers.attacks.plots import image_grid
from lit_papers.attacks.victim import Victim
from lit_papers.papers.szegedy_lbfgs.model import line_search_c, predict, rms_distortion

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def grid_indices(labels: torch.Tensor, success: torch.Tensor, k: int) -> list[int]:
    """Up to ``k`` indices of successful attacks for the picture: the first success of each class in class order,
    then the remaining successes in order (the attacked images are sorted by their index in a class-ordered
    folder, so the first k successes would often all be one class)."""
    ok = success.nonzero().flatten().tolist()
    first: dict[int, int] = {}
    for i in ok:
        first.setdefault(int(labels[i]), i)
    chosen = [first[c] for c in sorted(first)][:k]
    return chosen + [i for i in ok if i not in chosen][: k - len(chosen)]


class SzegedyLBFGSLitModule(AttackLitModule):
    def __init__(self, *, victim: Victim, transfer_victim: Victim | None = None, num_images: int | None = 100,
                 c_init: float = 1.0, search_steps: int = 8, max_iter: int = 100, chunk: int = 100,
                 attack_seed: int = 0, grid_images: int = 8,
                 sample_seed: int | None = None, optimizer: OptimizerCallable | None = None,
                 scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__(victim=victim, num_images=num_images, sample_seed=sample_seed, optimizer=optimizer,
                         scheduler=scheduler)
        self.save_hyperparameters(ignore=["victim", "transfer_victim", "optimizer", "scheduler"])
        self.transfer_victim = transfer_victim
        if transfer_victim is not None:
            transfer_victim.requires_grad_(False)  # attacked through, never trained here
        self.c_init, self.search_steps, self.max_iter, self.chunk = c_init, search_steps, max_iter, chunk
        self.attack_seed, self.grid_images = attack_seed, grid_images
        self.result: dict = {}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.transfer_victim is not None and stage != "fit":
            self.transfer_victim.load()

    def collect(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Only images the victim classifies correctly are attacked (the paper's adversarials start from them)."""
        with torch.no_grad():
            keep = predict(self.victim.eval(), images) == labels
        if keep.any():
            super().collect(images[keep], labels[keep])

    def run_attack(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        victim = self.victim.eval()
        gen = torch.Generator().manual_seed(self.attack_seed)
        offset = torch.randint(1, 10, (len(labels),), generator=gen).to(labels.device)
        targets = (labels + offset) % 10  # uniform over the 9 other labels
        start = time.time()
        parts = [line_search_c(victim, images[i:i + self.chunk], targets[i:i + self.chunk], c_init=self.c_init,
                               steps=self.search_steps, max_iter=self.max_iter)
                 for i in range(0, len(images), self.chunk)]
        seconds = time.time() - start
        x_adv = torch.cat([p[0] for p in parts])
        success = torch.cat([p[1] for p in parts])
        with torch.no_grad():
            success &= predict(victim, x_adv) == targets  # the final images, as stored
        d = rms_distortion(x_adv, images)[success].double()
        n, k = len(images), int(success.sum())
        out = {"success_rate": k / n, "success_rate_n": n, "attacks_per_s": n / seconds,
               "distortion": float(d.mean()) if k else float("nan"), "distortion_n": k,
               "distortion_ci95": 1.959964 * float(d.std()) / math.sqrt(k) if k > 1 else float("nan"),
               "distortion_median": float(d.median()) if k else float("nan")}
        if self.transfer_victim is not None and k:
            with torch.no_grad():
                other = predict(self.transfer_victim.eval(), x_adv[success])
                clean_other = predict(self.transfer_victim, images[success])
            out.update({"transfer_misclassified": float((other != labels[success]).float().mean()),
                        "transfer_misclassified_n": k,
                        "transfer_target": float((other == targets[success]).float().mean()), "transfer_target_n": k,
                        "transfer_clean_acc": float((clean_other == labels[success]).float().mean()),
                        "transfer_clean_acc_n": k})
            # paired per image: [adversarial misclassified] - [clean misclassified] in {-1, 0, 1}
            excess = (other != labels[success]).double() - (clean_other != labels[success]).double()
            out.update({"transfer_excess": float(excess.mean()), "transfer_excess_n": k,
                        "transfer_excess_ci95": 1.959964 * float(excess.std()) / math.sqrt(k) if k > 1
                        else float("nan")})
        self.result = {"x": images, "x_adv": x_adv, "labels": labels, "targets": targets, "success": success}
        if self._trainer is not None and self.trainer.is_global_zero and self.grid_images:
            self.picture(Path(self.trainer.default_root_dir) / "lbfgs_grid.png")
        return out

    def picture(self, path: Path) -> Path:
        """Originals / perturbations (scaled to [0, 1] per image) / adversarials for up to ``grid_images``
        successes, one per class first (``grid_indices``)."""
        res = self.result
        idx = grid_indices(res["labels"], res["success"], self.grid_images) or list(range(min(4, len(res["x"]))))
        names = CIFAR10_CLASSES
        to_hwc = lambda t: t.detach().float().permute(1, 2, 0).cpu().numpy()  # noqa: E731
        rows, captions = [[], [], []], [[], [], []]
        for i in idx:
            r = res["x_adv"][i] - res["x"][i]
            scaled = 0.5 + r / (2 * r.abs().max().clamp_min(1e-12))
            rows[0].append(to_hwc(res["x"][i]))
            rows[1].append(to_hwc(scaled))
            rows[2].append(to_hwc(res["x_adv"][i]))
            captions[0].append(names[int(res["labels"][i])])
            captions[1].append(f"rms {float(rms_distortion(res['x_adv'][i:i + 1], res['x'][i:i + 1])):.4f}")
            captions[2].append(names[int(res["targets"][i])] if bool(res["success"][i]) else "(failed)")
        return image_grid(rows, captions, path, row_names=["original", "r (scaled)", "adversarial"],
                          title="box-constrained L-BFGS, targeted (label / distortion / target)")
