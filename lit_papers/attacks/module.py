"""AttackLitModule: what the adversarial papers' LightningModules share.

``lit-papers test --config configs/<paper>/<variant>.yaml`` loads the victim's checkpoint (``setup``), turns
every test batch back into images in [0, 1] (the datamodule yields normalised tensors: ``x * std + mean`` with
the datamodule's own statistics, rounded to the 1/255 grid the images came from), lets the paper's module
collect what it attacks (:meth:`collect`), and runs the paper's procedure once at the end of the test epoch
(:meth:`run_attack`, logging ``test/<metric>``). ``validate`` (and the validations of ``fit``) run the same
attack on the validation images and log ``val/<metric>``: sweeps tune attack settings there, never on test.

``lit-papers fit`` exists for the tiny configs only: with no victim checkpoint it trains the victim in place
(cross-entropy, the injected optimizer), so that ``run.test_after_fit`` then attacks a victim trained seconds
earlier. With a checkpoint configured, ``fit`` is refused (the victim's own config trains it).
"""

from __future__ import annotations

import sys
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from lit_papers.attacks.victim import Victim, as_chw
from lit_papers.schedules import optimizer_config


class AttackLitModule(L.LightningModule):
    """Base of the attack modules. ``victim``: the attacked classifier (:class:`Victim`); ``num_images``: how
    many of the collected images are attacked (None: all); ``sample_seed``: None = the first ``num_images`` in
    loader order (collection stops there), else a uniform random subset drawn with this seed from the whole split
    (a folder of images is ordered class by class, so the first images are of one or two classes only);
    ``optimizer``/``scheduler``: for training a victim in place (tiny configs only)."""

    def __init__(self, *, victim: Victim, num_images: int | None = None, sample_seed: int | None = None,
                 optimizer: OptimizerCallable | None = None, scheduler: LRSchedulerCallable | None = None) -> None:
        super().__init__()
        self.victim = victim
        self.num_images = num_images
        self.sample_seed = sample_seed
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.register_buffer("data_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("data_std", torch.ones(1, 3, 1, 1), persistent=False)
        self.images: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.trained_in_place = False

    # -- data: normalised batches -> [0, 1] images ---------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is None or std is None:
            raise ValueError(f"{type(self).__name__}: the datamodule {type(datamodule).__name__} exposes no `mean`/"
                             "`std` (its input normalisation); attacks need them to work on images in [0, 1]: use "
                             "lit_papers.data.cifar.CIFARDataModule")
        self.data_mean = as_chw(np.asarray(mean), self.victim.image_size).to(self.data_std.device)
        self.data_std = as_chw(np.asarray(std), self.victim.image_size).to(self.data_std.device)
        if stage == "fit":
            if self.victim.checkpoint is not None:
                raise ValueError(f"{type(self).__name__}: this config attacks the trained victim "
                                 f"{self.victim.checkpoint!r}; run `lit-papers test` (the victim's own config trains it)")
            self.victim.set_normalization(mean, std, getattr(datamodule, "normalization", None))
            self.trained_in_place = True
        elif self.victim.checkpoint is not None:
            self.victim.load()
        elif not self.trained_in_place and not getattr(self.trainer, "ckpt_path", None):
            print(f"[{type(self).__name__}] warning: no victim checkpoint and no training in this process: the "
                  "victim is UNTRAINED (set model.init_args.victim.init_args.checkpoint)", file=sys.stderr)
            self.victim.set_normalization(mean, std, getattr(datamodule, "normalization", None))

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised batch (B, 3, H, W) -> images in [0, 1] on the 1/255 grid."""
        return (torch.round((x * self.data_std + self.data_mean) * 255.0) / 255.0).clamp(0.0, 1.0)

    # -- fit: a victim trained in place (tiny configs) ----------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self.victim(self.to_unit(images)), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError(f"{type(self).__name__}: fit needs model.init_args.optimizer (training a victim in place)")
        return optimizer_config(self.optimizer_factory(self.victim.parameters()), self.scheduler_factory)

    # -- validation / test: collect, then attack once per epoch --------------------------------------------------
    def _start(self) -> None:
        self.images, self.labels = [], []
        self.victim.eval()

    def on_validation_start(self) -> None:
        self._start()

    def on_test_start(self) -> None:
        self._start()

    def collected(self) -> int:
        return sum(len(x) for x in self.images)

    def _step(self, batch, dataloader_idx: int) -> None:
        full = self.num_images is not None and self.sample_seed is None and self.collected() >= self.num_images
        if dataloader_idx != 0 or full:
            return
        images, labels = batch
        self.collect(self.to_unit(images), labels)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, dataloader_idx)

    def collect(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep a batch (images in [0, 1]); subclasses filter (e.g. correctly classified images only)."""
        self.images.append(images)
        self.labels.append(labels)

    def gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The collected images (N, 3, H, W) and labels (N,), at most ``num_images``."""
        if not self.images:
            raise ValueError(f"{type(self).__name__}: no images were collected (empty split, or none passed the "
                             "filter: an untrained victim classifies few images correctly)")
        x, y = torch.cat(self.images), torch.cat(self.labels)
        if self.num_images is None:
            return x, y
        if self.sample_seed is None:
            return x[: self.num_images], y[: self.num_images]
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.sample_seed))[: self.num_images]
        pick = pick.sort().values.to(x.device)
        return x[pick], y[pick]

    def _attack_and_log(self, stage: str) -> None:
        if self._trainer is not None and self.trainer.sanity_checking:
            return
        was_training = self.victim.training
        self.victim.eval()
        with torch.inference_mode(False), torch.enable_grad():
            images, labels = (t.clone() for t in self.gathered())  # normal tensors: the attacks need autograd
            metrics = self.run_attack(images, labels)
        self.victim.zero_grad(set_to_none=True)
        self.victim.train(was_training)
        for key, value in metrics.items():
            self.log(f"{stage}/{key}", float(value))

    def on_validation_epoch_end(self) -> None:
        """The attack on the validation images (what a sweep tunes: never the test images)."""
        self._attack_and_log("val")

    def on_test_epoch_end(self) -> None:
        self._attack_and_log("test")

    def run_attack(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        raise NotImplementedError
