"""Improved GAN (Salimans et al. 2016): the K+1 discriminator's D(x) = Z/(Z+1) and losses, feature matching,
historical averaging, minibatch discrimination and virtual batch normalisation, each on a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_papers.papers.improved_gan.model import (
    Discriminator,
    Generator,
    HistoricalAverage,
    MinibatchDiscrimination,
    VirtualBatchNorm,
    discriminator_logit,
    feature_matching_loss,
    generator_adversarial_loss,
    real_probability,
    supervised_loss,
    unsupervised_loss,
)

LOG = math.log


def test_d_is_z_over_z_plus_one():
    logits = torch.tensor([[0.0, LOG(3.0)], [LOG(0.1), LOG(0.15)]])  # Z = 1 + 3 = 4; Z = 0.25
    assert torch.allclose(real_probability(logits), torch.tensor([0.8, 0.2]), atol=1e-7)
    assert torch.allclose(discriminator_logit(logits), torch.tensor([LOG(4.0), LOG(0.25)]), atol=1e-6)
    # huge logits: Z overflows float32, logsumexp does not; D -> 1
    big = torch.tensor([[1000.0, 1000.0]])
    assert discriminator_logit(big).item() == pytest.approx(1000 + LOG(2.0))
    assert real_probability(big).item() == 1.0
    # K = 1: log Z is the logit itself (the plain GAN)
    assert torch.equal(discriminator_logit(torch.tensor([[2.5]])), torch.tensor([2.5]))


def test_supervised_and_unsupervised_losses_by_hand():
    real = torch.tensor([[0.0, LOG(3.0)]])  # D = 0.8, p(y = 1 | x, y < K+1) = 3/4
    fake = torch.tensor([[LOG(0.1), LOG(0.15)]])  # D = 0.2
    assert supervised_loss(real, torch.tensor([1])).item() == pytest.approx(-LOG(0.75), rel=1e-6)
    # -log D(x) - log(1 - D(G(z))) = -log 0.8 - log 0.8
    assert unsupervised_loss(real, fake).item() == pytest.approx(-2 * LOG(0.8), rel=1e-6)
    # one-sided smoothing: real target 0.9, fake target stays 0
    smoothed = -(0.9 * LOG(0.8) + 0.1 * LOG(0.2)) - LOG(0.8)
    assert unsupervised_loss(real, fake, real_target=0.9).item() == pytest.approx(smoothed, rel=1e-6)
    # generator's non-saturating loss: -log D(G(z)) = -log 0.2
    assert generator_adversarial_loss(fake).item() == pytest.approx(-LOG(0.2), rel=1e-6)
    # the total of sec. 5 = the K+1-way cross-entropy with l_{K+1} = 0: check against F.cross_entropy on K+1 logits
    with_fake_class = torch.cat([real, torch.zeros(1, 1)], 1)  # (1, K+1)
    assert supervised_loss(real, torch.tensor([1])).item() + (-LOG(0.8)) == pytest.approx(
        F.cross_entropy(with_fake_class, torch.tensor([1])).item(), rel=1e-6)


def test_feature_matching_loss_by_hand_and_its_gradient():
    f_real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    f_fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]], requires_grad=True)  # mean (1, 1)
    loss = feature_matching_loss(f_real, f_fake)
    assert loss.item() == pytest.approx(1.0**2 + 2.0**2)
    loss.backward()  # d/d f_fake[i] = -2 (mean_real - mean_fake) / N = -(1, 2)
    assert torch.allclose(f_fake.grad, torch.tensor([[-1.0, -2.0], [-1.0, -2.0]]))
    assert feature_matching_loss(f_real, f_fake.detach(), distance="mean_abs").item() == pytest.approx(1.5)


def test_historical_average_penalty_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    history = HistoricalAverage([p])
    history.update()
    assert history.penalty().item() == 0.0  # t = 1: the average is theta itself
    with torch.no_grad():
        p.copy_(torch.tensor([3.0, 1.0]))
    history.update()  # average of (1, -1) and (3, 1) = (2, 0)
    penalty = history.penalty()
    assert penalty.item() == pytest.approx(1.0 + 1.0)
    penalty.backward()
    assert torch.allclose(p.grad, torch.tensor([2.0, 2.0]))  # 2 (theta - avg), the average is a constant
    with torch.no_grad():
        p.copy_(torch.tensor([5.0, 3.0]))
    history.update()  # average (1 + 3 + 5) / 3 = 3, (-1 + 1 + 3) / 3 = 1
    assert history.penalty().item() == pytest.approx(4.0 + 4.0)
    restored = HistoricalAverage([p])
    restored.load_state_dict(history.state_dict())
    assert restored.count == 3 and restored.penalty().item() == pytest.approx(8.0)


def test_minibatch_discrimination_two_samples_by_hand():
    layer = MinibatchDiscrimination(in_features=2, num_kernels=2, kernel_dim=2)
    with torch.no_grad():
        layer.T.copy_(torch.tensor([[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 0.0]]))
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # M_1 = (b0: (1, 0), b1: (0, 2)); M_2 = (b0: (0, 1), b1: (1, 0)); L1: b0 = 2, b1 = 3
    out = layer(f)
    assert out.shape == (2, 4)
    o = torch.tensor([1 + math.exp(-2), 1 + math.exp(-3)])  # j = i contributes exp(0) = 1
    assert torch.allclose(out, torch.cat([f, torch.stack([o, o])], 1), atol=1e-6)
    # identical samples: every c_b = 1, o = n
    assert torch.allclose(layer(torch.ones(3, 2))[:, 2:], torch.full((3, 2), 3.0))


def _vbn_oracle(ref: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """float64 loop: example i normalised with (R * ref stats + its own) / (R + 1), per channel."""
    r = ref.shape[0]
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            ref_vals, own = ref[:, c].reshape(-1), x[i, c].reshape(-1)
            mean = (r * ref_vals.mean() + own.mean()) / (r + 1)
            sq = (r * (ref_vals**2).mean() + (own**2).mean()) / (r + 1)
            out[i, c] = (x[i, c] - mean) / torch.sqrt(sq - mean**2 + eps)
    return out


def test_virtual_batch_norm_uses_the_reference_batch_statistics():
    torch.manual_seed(0)
    vbn = VirtualBatchNorm(3, reference_size=4, eps=1e-5).double()
    ref, x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1, torch.randn(2, 3, 5, 5, dtype=torch.float64)
    out = vbn(torch.cat([ref, x]))
    assert torch.allclose(out[4:], _vbn_oracle(ref, x, 1e-5), atol=1e-10)
    # reference rows: plain batch norm of the reference batch
    assert torch.allclose(out[:4], F.batch_norm(ref, None, None, training=True, eps=1e-5), atol=1e-10)
    # an example's output does not depend on the other examples of its batch, but does on the reference batch
    alone = vbn(torch.cat([ref, x[:1]]))[4:]
    assert torch.allclose(alone, out[4:5], atol=1e-12)
    assert not torch.allclose(vbn(torch.cat([ref * 3, x[:1]]))[4:], alone)
    # dense layers (N, C): per-unit statistics, the example's own value counted once
    vbn1 = VirtualBatchNorm(2, reference_size=3).double()
    ref1, x1 = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 6.0]]).double(), torch.tensor([[4.0, 3.0]]).double()
    mean = (ref1.sum(0) + x1[0]) / 4
    var = (torch.cat([ref1, x1]) ** 2).mean(0) - mean**2
    assert torch.allclose(vbn1(torch.cat([ref1, x1]))[3], (x1[0] - mean) / torch.sqrt(var + 1e-5), atol=1e-10)
    with pytest.raises(ValueError, match="first 3 are the reference"):
        vbn1(ref1)


def test_generator_with_vbn_is_batch_independent_and_bn_is_not():
    torch.manual_seed(0)
    z = torch.rand(5, 8)
    vbn_g = Generator(latent_dim=8, base_channels=16, norm="virtual", reference_size=4).train()
    out = vbn_g(z)
    assert out.shape == (5, 3, 32, 32) and out.abs().max() <= 1
    assert torch.allclose(vbn_g(z[:2]), out[:2], atol=1e-6)
    bn_g = Generator(latent_dim=8, base_channels=16, norm="batch").train()
    assert not torch.allclose(bn_g(z[:2]), bn_g(z)[:2], atol=1e-4)
    assert "reference_z" in vbn_g.state_dict()  # the reference batch is kept in checkpoints


def test_discriminator_shapes_and_minibatch_features():
    d = Discriminator(num_classes=10, widths=(8, 16), minibatch_kernels=4, minibatch_kernel_dim=3).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    f = d.features(x)
    assert f.shape == (3, 16) and d(x).shape == (3, 10)
    assert torch.allclose(d.classify(f), d(x), atol=1e-6)
    # with minibatch features the logits of a sample depend on its batch; without them they do not
    assert not torch.allclose(d(x[:1]), d(x)[:1], atol=1e-6)
    plain = Discriminator(num_classes=10, widths=(8, 16)).eval()
    assert torch.allclose(plain(x[:1]), plain(x)[:1], atol=1e-5)


# -- the LightningModule on the real 500-per-batch CIFAR sample (../shared/data) --------------------------------

def _datamodule(**kw):
    from lit_papers.data.cifar import CIFARDataModule

    args = dict(labelled_per_class=3, val_size=500, normalization="none", augment=False, batch_size=8,
                eval_batch_size=100, num_workers=0)
    dm = CIFARDataModule(**{**args, **kw})
    dm.setup("fit")
    return dm


def _module(generator: bool = True, **kw):
    from lit_papers.papers.improved_gan.module import ImprovedGANLitModule

    torch.manual_seed(0)
    return ImprovedGANLitModule(
        discriminator=Discriminator(widths=(4, 8)), generator=Generator(latent_dim=4, base_channels=8) if generator
        else None, optimizer_d=torch.optim.Adam, optimizer_g=torch.optim.Adam if generator else None, **kw)


class _Trainer:  # what labelled_batch / to_model_range read from the trainer
    def __init__(self, dm):
        self.datamodule, self.is_global_zero, self.progress_bar_callback = dm, True, None


def test_labelled_batches_cycle_through_the_labelled_examples_only():
    dm = _datamodule()
    module = _module(labelled_batch_size=7)
    module.trainer = _Trainer(dm)
    module.on_fit_start()
    labels = dm.train_set.labels
    assert len(module._pool) == 30 and bool((labels[module._pool] >= 0).all()) and int((labels >= 0).sum()) == 30
    pool_images = torch.stack([dm.train_set[int(i)][0] for i in module._pool]).flatten(1)  # (30, 3072)
    drawn, drawn_labels = [], []
    for _ in range(5):  # 35 draws: a full permutation of the 30 labelled examples, then 5 of the next
        images, y = module.labelled_batch()
        assert images.shape == (7, 3, 32, 32)
        drawn.append(images.flatten(1))
        drawn_labels.append(y)
    drawn, drawn_labels = torch.cat(drawn), torch.cat(drawn_labels)
    which = torch.cdist(drawn, pool_images).argmin(1)  # the pool example each drawn image is
    assert torch.allclose(drawn, pool_images[which])
    assert sorted(which[:30].tolist()) == list(range(30))  # each labelled example once per cycle
    assert torch.equal(drawn_labels, labels[module._pool][which])


def test_images_are_mapped_back_to_minus_one_one():
    dm = _datamodule(normalization="channel")
    module = _module()
    module.trainer = _Trainer(dm)
    image, _ = dm.train_set[0]
    raw = torch.from_numpy(dm.train_set.images[0]).permute(2, 0, 1).float() / 255  # (3, 32, 32) in [0, 1]
    assert torch.allclose(module.to_model_range(image[None])[0], 2 * raw - 1, atol=1e-5)


def _fit(module, dm, iterations, tmp_path, max_steps=None):
    import lightning as L

    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=max_steps or iterations, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return trainer


def test_gan_iteration_is_two_optimizer_steps_and_updates_both_players(tmp_path):
    dm = _datamodule()
    module = _module(historical_averaging=0.01, real_target=0.9)
    d0 = [p.detach().clone() for p in module.discriminator.parameters()]
    g0 = [p.detach().clone() for p in module.generator.parameters()]
    trainer = _fit(module, dm, 3, tmp_path, max_steps=6)
    assert trainer.global_step == 6 and module.history_d.count == 3 and module.history_g.count == 3
    assert all(not torch.equal(a, b) for a, b in zip(d0, module.discriminator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(g0, module.generator.parameters()))
    images, labels = module.sample_images(5)
    assert images.shape == (5, 3, 32, 32) and labels is None and 0 <= images.min() and images.max() <= 1
    assert torch.equal(module.sample_images(5)[0], images)  # fixed noise: the same grid each validation


def test_supervised_only_baseline_trains_the_discriminator_alone(tmp_path):
    dm = _datamodule()
    module = _module(generator=False)
    d0 = [p.detach().clone() for p in module.discriminator.parameters()]
    trainer = _fit(module, dm, 4, tmp_path)
    assert trainer.global_step == 4 and module.generator is None
    assert all(not torch.equal(a, b) for a, b in zip(d0, module.discriminator.parameters()))
    with pytest.raises(ValueError, match="no generator"):
        module.sample_images(2)


def test_scores_over_an_injected_classifier_from_its_checkpoint(tmp_path):
    import lightning as L

    from lit_papers.metrics.inception_score import score_from_logits

    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "clf.ckpt")
    dm = _datamodule(eval_batch_size=64)
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))  # other weights: loaded over
    module = _module(classifier=head, classifier_checkpoint=str(tmp_path / "clf.ckpt"), score_samples=100)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.validate(module, datamodule=dm)
    metrics = trainer.callback_metrics
    assert torch.equal(module.classifier.classifier[1].weight, net[1].weight)  # the checkpoint's weights
    # real images: every 5th of the 500 validation images (500 // 100), in [0, 1] (normalization none)
    real = torch.stack([dm.val_set[i][0] for i in range(0, 500, 5)])
    assert float(metrics["val/classifier_score_real"]) == pytest.approx(score_from_logits(net(real))[0], rel=1e-4)
    assert 1.0 <= float(metrics["val/classifier_score"]) <= 10.0
    assert float(metrics["val/error_n"]) == 500
    assert "val/classifier_score_ci95" not in metrics and float(metrics["val/classifier_score_n"]) == 100
    trainer.test(module, datamodule=dm)  # at test: the bootstrap intervals of both scores
    metrics = trainer.callback_metrics
    assert 0.0 < float(metrics["test/classifier_score_ci95"]) < 1.0
    assert 0.0 < float(metrics["test/classifier_score_real_ci95"]) < 1.0
