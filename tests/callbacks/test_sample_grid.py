"""SampleGrid: a PNG of ``pl_module.sample_images(n)`` after each validation, atomic, logged to image loggers."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers.logger import Logger
from torch.utils.data import DataLoader
from torchvision.io import read_image

from lit_papers.callbacks.sample_grid import SampleGrid, sample_grid


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile i is a constant image of value i / (n - 1) in channel 0, 1 - that in channel 1, 0.5 in channel 2;
    labels count down, so ordering by label reverses the tiles."""
    v = torch.arange(n, dtype=torch.float32) / max(n - 1, 1)
    images = torch.stack([v, 1 - v, torch.full_like(v, 0.5)], 1)[:, :, None, None].expand(n, 3, 4, 6).clone()
    return images, torch.arange(n - 1, -1, -1)


class Sampler(L.LightningModule):
    def __init__(self, *, labelled: bool = True, scale: float = 1.0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.labelled, self.scale = labelled, scale
        self.calls: list[int] = []

    def sample_images(self, n: int):
        self.calls.append(n)
        images, labels = _images(n)
        return images * self.scale, (labels if self.labelled else None)

    def training_step(self, batch, batch_idx):
        return self.layer(batch.float()[:, None]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class ImageLogger(Logger):
    """Stands in for WandbLogger: records log_image calls."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict] = []

    name = "fake"
    version = 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None, **kwargs):
        self.images.append({"key": key, "images": images, "step": step, **kwargs})


def _trainer(tmp_path, callbacks, logger=False, **kw):
    return L.Trainer(default_root_dir=tmp_path, logger=logger, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, callbacks=callbacks, **kw)


def test_grid_pixels_follow_label_order(tmp_path):
    grid_cb = SampleGrid(num_samples=6, nrow=3, keep_history=False)
    _trainer(tmp_path, [grid_cb]).validate(Sampler(), DataLoader(torch.arange(2), batch_size=2))
    drawn = read_image(str(tmp_path / "samples_val.png"))  # (3, H', W') uint8
    pad, h, w = 2, 4, 6
    assert drawn.shape == (3, 2 * h + 3 * pad, 3 * w + 4 * pad)
    images, labels = _images(6)
    # tiles ordered by label 0..5 = original images 5, 4, ..., 0; read tile (row r, col c) by hand
    for slot in range(6):
        r, c = divmod(slot, 3)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        tile = drawn[:, y:y + h, x:x + w].float()
        expected = (images[5 - slot] * 255).round()
        assert torch.equal(tile, expected), slot
    assert drawn[:, 0, :].eq(255).all()  # white padding
    assert torch.equal(drawn, sample_grid(images, labels, nrow=3))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary left behind


def test_every_validation_draws_and_logs(tmp_path):
    logger = ImageLogger()
    module = Sampler(labelled=False)
    grid_cb = SampleGrid(num_samples=4, nrow=2)
    trainer = _trainer(tmp_path, [grid_cb], logger=logger, max_epochs=3, num_sanity_val_steps=2,
                       log_every_n_steps=1)
    data = DataLoader(torch.arange(4), batch_size=2)
    trainer.fit(module, data, data)
    assert module.calls == [4, 4, 4]  # once per validation, never in the sanity check
    history = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert history == ["val_step0000002.png", "val_step0000004.png", "val_step0000006.png"]
    assert [e["key"] for e in logger.images] == ["val/samples"] * 3
    assert [e["step"] for e in logger.images] == [2, 4, 6]
    logged = torch.from_numpy(logger.images[-1]["images"][0]).permute(2, 0, 1)
    assert torch.equal(logged, read_image(str(tmp_path / "samples_val.png")))
    assert "caption" not in logger.images[0]  # unlabelled samples: no caption


def test_caption_names_classes(tmp_path):
    logger = ImageLogger()

    class DM(L.LightningDataModule):
        class_names = ["a", "b", "c", "d"]

        def val_dataloader(self):
            return DataLoader(torch.arange(2), batch_size=2)

    _trainer(tmp_path, [SampleGrid(num_samples=4, keep_history=False)], logger=logger).validate(Sampler(), DM())
    assert logger.images[0]["caption"] == ["a b c d"]


@pytest.mark.parametrize("scale", [1.5, float("nan")])
def test_bad_samples_raise_and_write_nothing(tmp_path, scale):
    with pytest.raises(ValueError, match="Sampler.sample_images"):
        _trainer(tmp_path, [SampleGrid(num_samples=3)]).validate(Sampler(scale=scale),
                                                                 DataLoader(torch.arange(2), batch_size=2))
    assert not (tmp_path / "samples_val.png").exists()
    assert not list(tmp_path.rglob("*.png"))


def test_module_without_sampler_is_named(tmp_path):
    class NoSampler(Sampler):
        sample_images = None

    with pytest.raises(ValueError, match="NoSampler has no sample_images"):
        _trainer(tmp_path, [SampleGrid()]).validate(NoSampler(), DataLoader(torch.arange(2), batch_size=2))
