"""GatedPixelCNNLitModule: maximum-likelihood training of an autoregressive image model (van den Oord et al. 2016).

The network (:class:`~lit_papers.papers.gated_pixelcnn.model.GatedPixelCNN` or the plain
:class:`~lit_papers.papers.gated_pixelcnn.model.PlainPixelCNN`), optimizer and scheduler are injected. Images
must arrive in [0, 1] with exact 8-bit values k/255 (the CIFAR DataModule with ``normalization: none``): the
targets are round(255 x), and an input that is not on that grid (a normalised batch) is an error, never a silently
wrong likelihood. Loss: the mean NLL per sub-pixel in nats of the 256-way softmaxes (eq. 1).

Logged: ``train/loss`` (nats/dim), ``train/bits_per_dim``, ``{val,test}/bits_per_dim`` (mean over images of
-ln p(x) / (D ln 2), D = 3 H W) with ``_ci95`` (95% half-width over images) and ``_n`` (images); several test sets
(the datamodule's ``test_metric_suffixes``) are logged as ``test/bits_per_dim<suffix>``.
``conditional: true`` feeds the class label to the network (eq. 4) in training, evaluation and sampling.
``sample_images(n)`` (for :class:`~lit_papers.callbacks.sample_grid.SampleGrid`) draws n images with labels
0, 1, ..., K-1, 0, 1, ... (unconditional models: labels None) at ``sample_shape`` (C, H, W).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.metrics.bits_per_dim import BitsPerDim, bits_per_dim, categorical_nll_nats
from lit_papers.papers.gated_pixelcnn.model import LEVELS, sample
from lit_papers.schedules import optimizer_config


def to_levels(images: torch.Tensor, where: str = "batch") -> torch.Tensor:
    """Images (B, 3, H, W) float in [0, 1] on the k/255 grid -> int64 levels 0..255. Raises ``ValueError``
    for anything else (e.g. mean/std-normalised images)."""
    scaled = images.float() * (LEVELS - 1)
    levels = torch.round(scaled)
    off = (scaled - levels).abs().max().item() if images.numel() else 0.0
    lo, hi = (float(images.min()), float(images.max())) if images.numel() else (0.0, 0.0)
    if off > 1e-3 or lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{where}: images must be exact 8-bit values k/255 in [0, 1] (found range [{lo:.3g}, {hi:.3g}], "
            f"{off:.3g} off the grid); set data.init_args.normalization: none and augment: false for a "
            "likelihood model (a normalised or interpolated image has no discrete likelihood)")
    return levels.long()


class GatedPixelCNNLitModule(L.LightningModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 conditional: bool = True, num_classes: int = 10, sample_shape: tuple[int, int, int] = (3, 32, 32),
                 sample_temperature: float = 1.0, sample_seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        if conditional and getattr(model, "num_classes", 0) != num_classes:
            raise ValueError(f"conditional: true needs the model built with num_classes={num_classes} "
                             f"(model.init_args.num_classes is {getattr(model, 'num_classes', None)})")
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.val_bpd = BitsPerDim()
        self.test_suffixes: list[str] = [""]
        self.test_bpd = nn.ModuleList([BitsPerDim()])

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(images, labels if self.hparams.conditional else None)

    def nll(self, batch) -> tuple[torch.Tensor, int]:
        """(per-image NLL in nats (B,), D = sub-pixels per image)."""
        images, labels = batch
        targets = to_levels(images, where=f"{type(self).__name__} input")  # (B, 3, H, W)
        logits = self(images, labels)  # (B, 256, 3, H, W)
        return categorical_nll_nats(logits, targets), targets[0].numel()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        nll, dims = self.nll(batch)
        loss = nll.mean() / dims  # nats per sub-pixel
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/bits_per_dim", bits_per_dim(loss.detach(), 1))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        nll, dims = self.nll(batch)
        self.val_bpd.update(nll, dims)

    def _log_bpd(self, stage: str, metric: BitsPerDim, suffix: str = "") -> None:
        out = metric.compute()
        self.log(f"{stage}/bits_per_dim{suffix}", out["bits_per_dim"].float(), prog_bar=stage == "val",
                 add_dataloader_idx=False)
        self.log(f"{stage}/bits_per_dim{suffix}_ci95", out["ci95"].float(), add_dataloader_idx=False)
        self.log(f"{stage}/bits_per_dim{suffix}_n", out["n"].float(), add_dataloader_idx=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        if self.val_bpd.update_count:
            self._log_bpd("val", self.val_bpd)

    def on_test_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self.test_suffixes = list(getattr(datamodule, "test_metric_suffixes", None) or [""])
        self.test_bpd = nn.ModuleList(BitsPerDim() for _ in self.test_suffixes).to(self.device)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        nll, dims = self.nll(batch)
        self.test_bpd[dataloader_idx].update(nll, dims)

    def on_test_epoch_end(self) -> None:
        for metric, suffix in zip(self.test_bpd, self.test_suffixes, strict=True):
            if metric.update_count:
                self._log_bpd("test", metric, suffix)

    def sample_images(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n images (N, 3, H, W) in [0, 1] drawn sub-pixel by sub-pixel, and their labels (N,) (None when
        unconditional). Seeded by ``sample_seed``, so grids of successive validations differ by the model only."""
        hp = self.hparams
        labels = torch.arange(n, device=self.device) % hp.num_classes if hp.conditional else None
        generator = torch.Generator(device=self.device).manual_seed(hp.sample_seed)
        was_training = self.model.training
        self.model.eval()
        try:
            images = sample(self.model, labels, shape=tuple(hp.sample_shape), num=n, generator=generator,
                            temperature=hp.sample_temperature)
        finally:
            self.model.train(was_training)
        return images.float(), labels

    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
