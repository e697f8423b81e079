"""The predictions picture shows ``max_images`` images across evaluation batches (issue 17.14)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision.io import read_image

from lit_papers.callbacks.detections import DetectionPictures, draw_predictions


def _item(i: int) -> dict:
    image = torch.full((3, 16, 16), i / 10)
    return {"image": image, "boxes": torch.tensor([[2.0, 2, 10, 10]]), "labels": torch.tensor([1]),
            "scores": torch.tensor([0.9])}


class Publishing(L.LightningModule):
    """Publishes each evaluation batch's predictions in ``example_predictions`` whenever it finds ``None``
    (the detection LitModule's contract), two images per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.example_predictions = None

    def validation_step(self, batch, batch_idx):
        if self.example_predictions is None:
            self.example_predictions = {"items": [_item(int(i)) for i in batch]}


def test_picture_accumulates_across_batches(tmp_path):
    pictures = DetectionPictures(max_images=4)
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[pictures])
    trainer.validate(Publishing(), DataLoader(torch.arange(6), batch_size=2))
    drawn = read_image(str(tmp_path / "predictions_val.png"))
    expected = draw_predictions([_item(i) for i in range(4)], [])  # the first four images, drawn directly
    assert drawn.shape == expected.shape and torch.equal(drawn, expected)
    assert len(pictures.items) == 4
