"""ImprovedGANLitModule: the semi-supervised GAN of Salimans et al. 2016 (sec. 5) with manual optimisation and two
optimizers (discriminator, then generator, each iteration), or, with ``generator: null``, the same discriminator
trained on the labelled examples alone (the supervised-only baseline).

Each iteration (the released ``train_cifar_feature_matching.py``):

1. D step: a labelled batch (``labelled_batch_size`` images drawn from the labelled training examples, cycling
   through random permutations of them), the loader's batch as unlabelled real images (all training images count as
   unlabelled, as in the code) and a batch of G(z). loss_D = supervised_weight * L_supervised +
   unsupervised_weight * L_unsupervised(real_target) [+ historical_averaging * ||theta_D - mean theta_D||^2].
2. G step: fresh z; feature matching ||E f(x) - E f(G(z))||^2 on the discriminator's pooled features (sec. 3.1),
   or -log D(G(z)) with ``feature_matching: false`` [+ the historical-averaging term of G].

Lightning counts every ``optimizer.step()`` in ``global_step``: one GAN iteration is 2 steps (``max_steps`` =
2 x iterations), one supervised-only iteration 1 step. Learning rates decay linearly to 0 from ``lr_decay_start``
(a fraction of ``max_steps``; the code: constant for 800 of 1200 epochs, then linear -> 2/3).

Data contract (CIFARDataModule): batches (images normalised by the datamodule, labels; -1 = unlabelled); the
module maps images back to [-1, 1] with the datamodule's ``mean`` / ``std`` (the code's scaling, the generator's
tanh range) and draws labelled batches from ``datamodule.train_set`` (``.labels``, ``[i] -> (image, label)``).

Logged: ``train/loss_d``, ``train/loss_supervised``, ``train/loss_unsupervised``, ``train/loss_g``,
``train/d_real``, ``train/d_fake`` (mean D(x)), ``val|test/acc``, ``val|test/error`` (+ ``_n``, images) of the
discriminator as a K-class classifier, and with a ``classifier`` (any nn.Module returning logits, with its
``classifier_checkpoint``): ``val|test/classifier_score`` over ``score_samples`` generated images and
``val|test/classifier_score_real`` over about as many real evaluation images (every k-th, spread over the set),
each at test with ``_ci95`` (bootstrap over the samples, ``score_bootstrap`` resamples) and ``_n`` (samples).
These are inception-score formulas over OUR classifier, NOT comparable with the paper's Inception-network score
(8.09, Table 3).
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import SumMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_papers.metrics.inception_score import (
    NormalizedClassifier,
    bootstrap_score_ci95,
    load_classifier_checkpoint,
    score_from_logits,
)
from lit_papers.papers.improved_gan.model import (
    HistoricalAverage,
    feature_matching_loss,
    generator_adversarial_loss,
    real_probability,
    supervised_loss,
    unsupervised_loss,
)


class ImprovedGANLitModule(L.LightningModule):
    def __init__(
        self,
        *,
        discriminator: nn.Module,
        optimizer_d: OptimizerCallable,
        generator: nn.Module | None = None,
        optimizer_g: OptimizerCallable | None = None,
        num_classes: int = 10,
        supervised_weight: float = 1.0,
        unsupervised_weight: float = 1.0,
        feature_matching: bool = True,
        feature_distance: Literal["squared_l2", "mean_abs"] = "squared_l2",
        real_target: float = 1.0,
        historical_averaging: float = 0.0,
        labelled_batch_size: int = 100,
        labelled_seed: int = 0,
        lr_decay_start: float = 1.0,
        classifier: nn.Module | None = None,
        classifier_checkpoint: str | None = None,
        score_samples: int = 1000,
        score_splits: int = 1,
        score_bootstrap: int = 200,
        sample_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["discriminator", "generator", "optimizer_d", "optimizer_g", "classifier"])
        self.automatic_optimization = False
        if generator is not None and optimizer_g is None:
            raise ValueError("ImprovedGANLitModule: a generator needs optimizer_g (model.init_args.optimizer_g)")
        if not 0.0 < real_target <= 1.0:
            raise ValueError(f"real_target={real_target}: the smoothed real label must be in (0, 1] (0.9 = sec. 3.4)")
        if classifier is not None and classifier_checkpoint is None:
            raise ValueError("classifier without classifier_checkpoint: a score needs a trained classifier "
                             "(model.init_args.classifier_checkpoint)")
        self.discriminator, self.generator = discriminator, generator
        self.optimizer_d_factory, self.optimizer_g_factory = optimizer_d, optimizer_g
        self.num_classes = num_classes
        self.supervised_weight, self.unsupervised_weight = supervised_weight, unsupervised_weight
        self.feature_matching, self.feature_distance = feature_matching, feature_distance
        self.real_target, self.historical_averaging = real_target, historical_averaging
        self.labelled_batch_size, self.labelled_seed = labelled_batch_size, labelled_seed
        self.lr_decay_start = lr_decay_start
        # the classifier's weights and normalisation are read from its checkpoint in setup() (a config builds
        # without the file); it stays frozen
        if classifier is not None:
            classifier.requires_grad_(False)
        self.classifier = NormalizedClassifier(classifier) if classifier is not None else None
        self.classifier_checkpoint = classifier_checkpoint
        self.score_samples, self.score_splits, self.sample_seed = score_samples, score_splits, sample_seed
        self.score_bootstrap = score_bootstrap
        self.history_d = HistoricalAverage(discriminator.parameters()) if historical_averaging > 0 else None
        self.history_g = (HistoricalAverage(generator.parameters())
                          if historical_averaging > 0 and generator is not None else None)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_n, self.test_n = SumMetric(), SumMetric()
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self._pool: torch.Tensor | None = None
        self._pool_order: list[int] = []
        self._pool_rng = torch.Generator().manual_seed(labelled_seed)
        self._real_logits: list[torch.Tensor] = []

    # -- data ----------------------------------------------------------------------------------------------
    def _data_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The datamodule's normalisation as (3, H, W) / (3, 1, 1) tensors on this device."""
        if self._stats is None or self._stats[0].device != self.device:
            dm = getattr(self.trainer, "datamodule", None)
            mean, std = getattr(dm, "mean", None), getattr(dm, "std", None)
            if mean is None or std is None:
                raise ValueError(f"{type(self).__name__}: the datamodule ({type(dm).__name__}) has no mean/std "
                                 "normalisation statistics; use CIFARDataModule (data.class_path)")
            mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
            mean = mean.permute(2, 0, 1) if mean.dim() == 3 else mean.view(-1, 1, 1)  # (H, W, 3) -> (3, H, W)
            self._stats = (mean.to(self.device), std.view(-1, 1, 1).to(self.device))
        return self._stats

    def to_model_range(self, images: torch.Tensor) -> torch.Tensor:
        """Datamodule-normalised images -> [-1, 1] (the released code's (x - 127.5) / 128, up to 1/255)."""
        mean, std = self._data_stats()
        return 2.0 * (images * std + mean) - 1.0

    def setup(self, stage: str) -> None:
        if self.classifier is not None:
            loaded = load_classifier_checkpoint(self.classifier.classifier, self.classifier_checkpoint)
            self.classifier.mean, self.classifier.std = loaded.mean, loaded.std
            self.print(f"[improved_gan] classifier for the score: {type(self.classifier.classifier).__name__} from "
                       f"{self.classifier_checkpoint} (scores NOT comparable with the paper's Inception score)")

    def on_fit_start(self) -> None:
        self._stats = None
        if self.supervised_weight <= 0:
            return
        dataset = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise ValueError(f"{type(self).__name__}: supervised_weight > 0 needs labelled training examples from "
                             "datamodule.train_set.labels (CIFARDataModule)")
        self._pool = torch.nonzero(torch.as_tensor(labels) >= 0).squeeze(1)
        if len(self._pool) == 0:
            raise ValueError("no labelled training example (every label is -1); lower the unlabelled share "
                             "(data.init_args.labelled_per_class) or set model.init_args.supervised_weight: 0")
        self.print(f"[improved_gan] {len(self._pool)} labelled training examples of {len(labels)}; labelled batch "
                   f"{self.labelled_batch_size}")

    def labelled_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``labelled_batch_size`` labelled training examples (a fresh random permutation of the labelled
        set whenever one is used up, as the code tiles permutations), normalised as the datamodule yields them."""
        dataset = self.trainer.datamodule.train_set
        picks = []
        while len(picks) < self.labelled_batch_size:
            if not self._pool_order:
                self._pool_order = self._pool[torch.randperm(len(self._pool), generator=self._pool_rng)].tolist()
            picks.append(self._pool_order.pop())
        items = [dataset[i] for i in picks]
        images = torch.stack([im for im, _ in items]).to(self.device)
        labels = torch.as_tensor([int(y) for _, y in items], device=self.device)
        return images, labels

    # -- training ------------------------------------------------------------------------------------------
    def _lr_factor(self) -> float:
        total = self.trainer.max_steps
        if self.lr_decay_start >= 1.0 or total is None or total <= 0:
            return 1.0
        progress = self.trainer.global_step / total
        return max(0.0, min(1.0, (1.0 - progress) / (1.0 - self.lr_decay_start)))

    def _set_lr(self, optimizer) -> None:
        factor = self._lr_factor()
        for group in optimizer.optimizer.param_groups if hasattr(optimizer, "optimizer") else optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor

    def _history_penalty(self, history: HistoricalAverage | None) -> torch.Tensor | float:
        if history is None:
            return 0.0
        history.update()
        return self.historical_averaging * history.penalty()

    def training_step(self, batch, batch_idx: int) -> None:
        images, _ = batch
        optimizers = self.optimizers()
        opt_d, opt_g = (optimizers if isinstance(optimizers, list) else [optimizers, None])[:2]
        x_real = self.to_model_range(images)  # (B, 3, 32, 32) unlabelled real images in [-1, 1]
        use_sup = self.supervised_weight > 0
        x_lab, y_lab = self.labelled_batch() if use_sup else (x_real[:0], None)
        x_lab = self.to_model_range(x_lab) if use_sup else x_lab
        D, G = self.discriminator, self.generator

        # 1. discriminator step
        self._set_lr(opt_d)
        if G is not None:
            self.toggle_optimizer(opt_d)  # G's parameters are frozen: G(z) builds no graph
            x_fake = G(G.sample_noise(len(x_real), device=self.device))
            feats = D.features(torch.cat([x_lab, x_real, x_fake]))  # one pass; minibatch features per group below
            f_lab, f_real, f_fake = feats.split([len(x_lab), len(x_real), len(x_fake)])
            logits_real, logits_fake = D.classify(f_real), D.classify(f_fake)
            loss_unsup = unsupervised_loss(logits_real, logits_fake, real_target=self.real_target)
            self.log("train/loss_unsupervised", loss_unsup)
            self.log("train/d_real", real_probability(logits_real.detach()).mean())
            self.log("train/d_fake", real_probability(logits_fake.detach()).mean())
        else:
            f_lab, loss_unsup = D.features(x_lab), 0.0
        loss_d = self.unsupervised_weight * loss_unsup if G is not None else 0.0
        if use_sup:
            logits_lab = D.classify(f_lab)
            loss_sup = supervised_loss(logits_lab, y_lab)
            loss_d = loss_d + self.supervised_weight * loss_sup
            self.log("train/loss_supervised", loss_sup, prog_bar=True)
            self.log("train/acc_labelled", (logits_lab.argmax(1) == y_lab).float().mean())
        loss_d = loss_d + self._history_penalty(self.history_d)
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()
        self.log("train/loss_d", loss_d, prog_bar=True)
        if G is None:
            return
        self.untoggle_optimizer(opt_d)

        # 2. generator step (fresh noise, the updated discriminator)
        self._set_lr(opt_g)
        self.toggle_optimizer(opt_g)
        x_fake = G(G.sample_noise(len(x_real), device=self.device))
        if self.feature_matching:
            feats = D.features(torch.cat([x_real, x_fake]))
            f_real, f_fake = feats.split([len(x_real), len(x_fake)])
            loss_g = feature_matching_loss(f_real.detach(), f_fake, distance=self.feature_distance)
        else:
            loss_g = generator_adversarial_loss(D(x_fake))
        loss_g = loss_g + self._history_penalty(self.history_g)
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.log("train/loss_g", loss_g, prog_bar=True)

    def configure_optimizers(self):
        opt_d = self.optimizer_d_factory(self.discriminator.parameters())
        if self.generator is None:
            return opt_d
        return [opt_d, self.optimizer_g_factory(self.generator.parameters())]

    # -- samples and evaluation ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_images(self, n: int) -> tuple[torch.Tensor, None]:
        """n generated images in [0, 1] from a fixed noise seed (the same z at every call, so grids are comparable),
        in the generator's current mode (for the SampleGrid callback)."""
        if self.generator is None:
            raise ValueError("sample_images: this run has no generator (supervised-only baseline)")
        z = self.generator.sample_noise(n, generator=torch.Generator().manual_seed(self.sample_seed)).to(self.device)
        return ((self.generator(z) + 1) / 2).clamp(0, 1).float(), None

    def _score_stride(self, stage: str) -> tuple[int, int]:
        """(stride, batch size) of the real images the score sees: every stride-th evaluation image, so that
        ``score_samples`` of them spread over the whole set (folder sets are ordered class by class)."""
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        total = len(loader.dataset) if hasattr(loader, "dataset") else self.score_samples
        return max(1, total // self.score_samples), int(getattr(loader, "batch_size", None) or 1)

    def _evaluate(self, batch, stage: str, batch_idx: int = 0) -> None:
        images, labels = batch
        logits = self.discriminator(self.to_model_range(images))
        accuracy, count = (self.val_acc, self.val_n) if stage == "val" else (self.test_acc, self.test_n)
        accuracy(logits, labels)
        count(torch.tensor(float(len(labels)), device=self.device))
        self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=stage == "val", add_dataloader_idx=False)
        if self.classifier is not None and sum(len(t) for t in self._real_logits) < self.score_samples:
            stride, batch_size = self._score_stride(stage)
            index = torch.arange(len(images), device=images.device) + batch_idx * batch_size  # in the whole set
            picked = images[index % stride == 0]
            if len(picked):
                x01 = ((self.to_model_range(picked) + 1) / 2).clamp(0, 1)
                self._real_logits.append(self.classifier(x01).float().cpu())

    def _finish(self, stage: str) -> None:
        accuracy, count = (self.val_acc, self.val_n) if stage == "val" else (self.test_acc, self.test_n)
        n = count.compute()
        self.log(f"{stage}/error", 1.0 - accuracy.compute())
        self.log(f"{stage}/acc_n", n)
        self.log(f"{stage}/error_n", n)
        count.reset()
        if self.classifier is None:
            return
        if self._real_logits:
            real = torch.cat(self._real_logits)[: self.score_samples]
            self.log(f"{stage}/classifier_score_real", score_from_logits(real, splits=self.score_splits)[0])
            self._log_score_interval(f"{stage}/classifier_score_real", real, stage)
            self._real_logits = []
        if self.generator is not None and not self.trainer.sanity_checking:
            fake_logits = []
            for start in range(0, self.score_samples, 500):
                n_batch = min(500, self.score_samples - start)
                z = self.generator.sample_noise(n_batch, device=self.device)
                fake_logits.append(self.classifier(((self.generator(z) + 1) / 2).clamp(0, 1)).float().cpu())
            mean, std = score_from_logits(torch.cat(fake_logits), splits=self.score_splits)
            self.log(f"{stage}/classifier_score", mean)
            self._log_score_interval(f"{stage}/classifier_score", torch.cat(fake_logits), stage)
            if self.score_splits > 1:
                self.log(f"{stage}/classifier_score_std", std)

    def _log_score_interval(self, key: str, logits: torch.Tensor, stage: str) -> None:
        self.log(f"{key}_n", float(len(logits)))
        if stage == "test" and self.score_bootstrap > 0:
            probs = torch.softmax(logits.double(), dim=1)
            self.log(f"{key}_ci95", bootstrap_score_ci95(probs, splits=self.score_splits,
                                                         resamples=self.score_bootstrap))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:  # the first test set (further ones, e.g. exact records, are not scored here)
            self._evaluate(batch, "test", batch_idx)

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # -- historical averages travel with checkpoints ------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["historical_average"] = {name: h.state_dict() for name, h in
                                            (("d", self.history_d), ("g", self.history_g)) if h is not None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        for name, h in (("d", self.history_d), ("g", self.history_g)):
            if h is not None and name in checkpoint.get("historical_average", {}):
                h.load_state_dict(checkpoint["historical_average"][name])
