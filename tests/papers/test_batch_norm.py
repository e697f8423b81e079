"""Our BatchNorm (Ioffe & Szegedy 2015, Alg. 1-2) against torch.nn.BatchNorm2d/1d, and a float64 hand version."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_papers.papers.batch_norm.model import BatchNorm, BNConvNet


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_matches_torch_batchnorm2d_in_train_and_eval(momentum):
    torch.manual_seed(0)
    ours = BatchNorm(num_features=5, eps=1e-5, momentum=momentum).double()
    ref = nn.BatchNorm2d(5, eps=1e-5, momentum=momentum).double()
    with torch.no_grad():
        for p in (ours.weight, ref.weight):
            p.copy_(torch.linspace(0.5, 2.0, 5))
        for p in (ours.bias, ref.bias):
            p.copy_(torch.linspace(-1.0, 1.0, 5))
    for step in range(4):  # several batches: the running averages accumulate
        x = (torch.randn(6, 5, 7, 3, dtype=torch.float64) * (step + 1) + step).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), ref(x_ref)
        assert torch.allclose(y, y_ref, atol=1e-6)
        g = torch.randn_like(y)
        y.backward(g)
        y_ref.backward(g)
        assert torch.allclose(x.grad, x_ref.grad, atol=1e-6)
        assert torch.allclose(ours.weight.grad, ref.weight.grad, atol=1e-6)
        assert torch.allclose(ours.bias.grad, ref.bias.grad, atol=1e-6)
        ours.zero_grad()
        ref.zero_grad()
    assert torch.allclose(ours.running_mean, ref.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, ref.running_var, atol=1e-6)
    ours.eval()
    ref.eval()
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64) * 3 + 1
    assert torch.allclose(ours(x), ref(x), atol=1e-6)


def test_float32_matches_torch_and_1d_inputs():
    torch.manual_seed(1)
    ours, ref = BatchNorm(num_features=4), nn.BatchNorm1d(4)
    x = torch.randn(16, 4) * 2 + 3
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    ours.eval()
    ref.eval()
    assert torch.allclose(ours(x), ref(x), atol=1e-6)


def test_by_hand_statistics_over_batch_and_locations():
    """Alg. 1 over N, H, W per channel; Alg. 2 step 10: population variance = m/(m-1) * batch variance."""
    x = torch.arange(2 * 2 * 2 * 2, dtype=torch.float64).reshape(2, 2, 2, 2)
    bn = BatchNorm(num_features=2, eps=0.0, momentum=None).double()
    y = bn(x)
    channel0 = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11], dtype=torch.float64)  # x[:, 0] flattened
    mu, var = channel0.mean(), ((channel0 - channel0.mean()) ** 2).mean()
    assert torch.allclose(y[:, 0].flatten(), (channel0 - mu) / var.sqrt())
    assert torch.isclose(bn.running_mean[0], mu) and torch.isclose(bn.running_var[0], var * 8 / 7)


def test_conv_net_variants_build_and_run():
    x = torch.randn(4, 3, 32, 32)
    with_bn = BNConvNet(widths=(8, 16), batch_norm=True, activation="sigmoid")
    without = BNConvNet(widths=(8, 16), batch_norm=False)
    assert with_bn(x).shape == without(x).shape == (4, 10)
    assert sum(isinstance(m, BatchNorm) for m in with_bn.modules()) == 4
    assert not any(isinstance(m, BatchNorm) for m in without.modules())
    assert all(m.bias is None for m in with_bn.modules() if isinstance(m, nn.Conv2d))


def test_module_scores_each_test_set_under_its_suffix(tmp_path, monkeypatch, shared_data):
    """The *_cpu / full arms test on [folder, pickle]: test/acc on the JPEG images, test/acc_exact on the 500 exact
    records, each checked against the same network evaluated by hand."""
    import lightning as L

    from lit_papers.classification import ClassifierLitModule
    from tests.data.test_cifar_folder import folder_and_exact_test_sets

    dm = folder_and_exact_test_sets(tmp_path, monkeypatch, shared_data)
    torch.manual_seed(0)
    module = ClassifierLitModule(model=BNConvNet(widths=(4, 8)), optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    merged = {k: v for r in trainer.test(module, datamodule=dm, verbose=False) for k, v in r.items()}
    assert merged["test/acc_n"] == 30 and merged["test/acc_exact_n"] == 500
    module.eval()
    for dataset, suffix in zip(dm.test_sets, ["", "_exact"], strict=True):
        with torch.no_grad():
            x = torch.stack([dataset[i][0] for i in range(len(dataset))])
            acc = (module(x).argmax(dim=-1) == dataset.labels).double().mean().item()
        assert merged[f"test/acc{suffix}"] == pytest.approx(acc, abs=1e-6)
