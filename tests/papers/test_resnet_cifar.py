"""ClassifierLitModule (the resnet_cifar LightningModule) with the CIFAR datamodule: a checkpoint carries its normalisation statistics (issue 13
item 7), and several test sets are logged under their own names."""

from __future__ import annotations

import cv2
import lightning as L
import numpy as np
import pytest
import torch

from lit_papers.classification import ClassifierLitModule
from lit_papers.data.cifar import CIFARDataModule
from lit_papers.papers.resnet_cifar.model import ResNetCifar
from tests.data.test_cifar_folder import folder_and_exact_test_sets, make_image_folder


def _module() -> ClassifierLitModule:
    torch.manual_seed(0)
    return ClassifierLitModule(model=ResNetCifar(depth=8, num_classes=10),
                                optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9))


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, use_distributed_sampler=False, **kwargs)


def test_checkpoint_normalisation_is_used_at_test_time(tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_PAPERS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_image_folder(root / "cifar" / "cifar-10-jpeg", per_class={"train": 4, "test": 2})

    def datamodule() -> CIFARDataModule:
        return CIFARDataModule(root=str(root), source="folder", val_size=10, batch_size=8, eval_batch_size=100,
                               num_workers=0, download=False)

    dm, model = datamodule(), _module()
    trainer = _trainer(max_steps=4, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    fit_mean = dm.mean.copy()
    reference = trainer.test(model, datamodule=dm, verbose=False)[0]["test/loss"]

    # the training files change after training (here: every training image replaced by a brighter one)
    for path in sorted((root / "cifar" / "cifar-10-jpeg" / "train").rglob("*.*")):
        image = cv2.imread(str(path))
        cv2.imwrite(str(path), np.clip(image.astype(int) + 80, 0, 255).astype(np.uint8))

    dm2 = datamodule()
    out = _trainer().test(_module(), datamodule=dm2, ckpt_path=str(ckpt), verbose=False)[0]
    np.testing.assert_allclose(dm2.mean, fit_mean, atol=1e-12)
    np.testing.assert_allclose(dm2.test_sets[0].mean, fit_mean.astype(np.float32))
    assert out["test/loss"] == pytest.approx(reference, rel=1e-5)

    # recomputing the statistics from today's files, as before, would give another number
    fresh = datamodule()
    fresh.setup("test")
    assert np.abs(fresh.mean - fit_mean).max() > 0.2
    weights = _module()
    weights.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    other = _trainer().test(weights, datamodule=fresh, verbose=False)[0]["test/loss"]
    assert abs(other - reference) > 1e-3


def test_two_test_sets_are_logged_with_their_suffix_and_size(tmp_path, monkeypatch, shared_data):
    dm = folder_and_exact_test_sets(tmp_path, monkeypatch, shared_data)
    model = _module()
    results = _trainer().test(model, datamodule=dm, verbose=False)
    merged = {k: v for r in results for k, v in r.items()}
    assert merged["test/acc_n"] == 30 and merged["test/acc_exact_n"] == 500 and merged["test/error_exact_n"] == 500
    # oracle: the same network evaluated by hand on each test set
    model.eval()
    for dataset, suffix in zip(dm.test_sets, ["", "_exact"], strict=True):
        with torch.no_grad():
            x = torch.stack([dataset[i][0] for i in range(len(dataset))])
            pred = model(x).argmax(dim=-1)
        acc = (pred == dataset.labels).double().mean().item()
        assert merged[f"test/acc{suffix}"] == pytest.approx(acc, abs=1e-6)
        assert merged[f"test/error{suffix}"] == pytest.approx(1 - acc, abs=1e-6)
