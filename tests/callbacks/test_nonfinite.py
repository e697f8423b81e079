"""The non-finite guard (issue 17.1): a NaN/inf loss or gradient stops the run before the optimizer step, saves
the batch and the last finite checkpoint, exits non-zero and leaves no reproduction-card result."""

from __future__ import annotations

import json
import types

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from lit_papers.callbacks.card import RESULT_FILE, ReproductionCard
from lit_papers.callbacks.nonfinite import NONFINITE_FILE, NonFiniteError, NonFiniteGuard

TINY = "configs/resnet_cifar/tiny.yaml"


class Poisoned(L.LightningModule):
    """A one-parameter regression whose loss (``kind="loss"``) or gradient (``kind="grad"``, a sqrt at 0: finite
    loss, infinite gradient) turns non-finite at batch ``bad``."""

    def __init__(self, bad: int, kind: str = "loss", manual: bool = False) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0]))
        self.bad, self.kind = bad, kind
        self.automatic_optimization = not manual

    def _loss(self, batch, batch_idx):
        x = batch["x"]
        loss = ((self.w * x - 2.0) ** 2).mean()
        if batch_idx == self.bad:
            if self.kind == "loss":
                loss = loss * float("nan")
            else:
                loss = loss + torch.sqrt(self.w - self.w.detach()).sum()  # value +0, d/dw = inf
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch, batch_idx)
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()

    def batch_identifiers(self, batch):
        return batch["id"].tolist()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _loader(n=8):
    data = [{"x": torch.full((2,), float(i + 1)), "id": torch.tensor([100 + 2 * i, 101 + 2 * i])} for i in range(n)]
    return DataLoader(data, batch_size=None)


def _fit(tmp_path, module, **trainer_kwargs):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=1, save_last=True, save_top_k=0)
    trainer = L.Trainer(default_root_dir=tmp_path, max_steps=8, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[NonFiniteGuard(), ckpt], **trainer_kwargs)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(module, _loader())
    record = json.loads((tmp_path / NONFINITE_FILE).read_text())
    assert record == info.value.record
    return trainer, record


@pytest.mark.parametrize("manual", [False, True])
def test_nan_loss_stops_before_the_step_and_names_batch_and_checkpoint(tmp_path, manual):
    module = Poisoned(bad=3, manual=manual)
    trainer, record = _fit(tmp_path, module)
    assert record["reason"] == "loss" and record["global_step"] == 3 and record["batch_idx"] == [3]
    assert record["batch_identifiers"] == [106, 107]  # from the module's batch_identifiers
    assert record["batches"][0]["loss"] == ["nan"]
    last = record["last_finite_checkpoint"]
    assert last == str(tmp_path / "checkpoints" / "last.ckpt")
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 3
    # no optimizer step after the checkpoint: the weights in memory are the checkpoint's, and finite
    assert torch.equal(module.w.detach(), saved["state_dict"]["w"]) and torch.isfinite(module.w).all()
    assert trainer.global_step == 3


def test_infinite_gradient_with_finite_loss_stops(tmp_path):
    module = Poisoned(bad=2, kind="grad")
    _, record = _fit(tmp_path, module)
    assert record["reason"] == "gradient" and record["global_step"] == 2
    assert record["nonfinite_gradients"] == ["w"] and record["batches"][0]["loss_finite"]
    assert torch.isfinite(module.w).all()


def test_gradient_accumulation_names_the_micro_batch(tmp_path):
    module = Poisoned(bad=4)  # first micro-batch of the third window (batches 4, 5)
    _, record = _fit(tmp_path, module, accumulate_grad_batches=2)
    assert record["global_step"] == 2 and record["batch_idx"] == [4]
    assert [b["batch_idx"] for b in record["batches"]] == [4, 5]
    assert record["batch_identifiers"] == [108, 109]


def test_last_finite_checkpoint_skips_a_checkpoint_with_nonfinite_weights(tmp_path):
    module = Poisoned(bad=3)
    trainer, record = _fit(tmp_path, module)
    from lit_papers.callbacks.nonfinite import last_finite_checkpoint

    good = tmp_path / "checkpoints" / "last.ckpt"
    broken = torch.load(good, weights_only=True)
    broken["state_dict"]["w"] = torch.tensor([float("inf")])
    torch.save(broken, tmp_path / "checkpoints" / "newer.ckpt")  # newest file, but not finite
    assert last_finite_checkpoint(trainer) == str(good)


def test_card_writes_no_result_for_a_run_stopped_on_nonfinite(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("paper: P\nresults:\n  - {variant: '*', metric: test/acc, kind: target, value: 0.9, source: T1}\n")
    trainer = types.SimpleNamespace(is_global_zero=True, callback_metrics={"test/acc": torch.tensor(0.5)},
                                    world_size=1, precision="32-true", global_step=3, loggers=[],
                                    default_root_dir=str(tmp_path))
    callback = ReproductionCard(run_dir=str(tmp_path), variant="tiny", card_path=str(card))
    (tmp_path / NONFINITE_FILE).write_text("{}")
    callback.on_test_end(trainer, None)
    assert not (tmp_path / RESULT_FILE).exists()
    (tmp_path / NONFINITE_FILE).unlink()  # the same call without the file writes the result (the oracle)
    callback.on_test_end(trainer, None)
    assert json.loads((tmp_path / RESULT_FILE).read_text())[0]["ours"] == 0.5


def test_cli_run_with_exploding_lr_exits_nonzero_without_finishing(cli):
    proc = cli("fit", "--config", TINY, "--wandb", "false", "--model.init_args.optimizer.init_args.lr", "1e12",
               "--run.checkpoint_every_n_steps", "1", "--run.test_after_fit", "true", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    run = cli.runs / "resnet_cifar" / "tiny" / "v0"
    assert not (run / "FINISHED").exists() and not (run / "run.lock").exists()
    assert not (run / RESULT_FILE).exists()
    record = json.loads((run / NONFINITE_FILE).read_text())
    assert "non-finite" in proc.stderr and str(run / NONFINITE_FILE) in proc.stderr
    assert record["global_step"] >= 1 and record["batch_idx"]
    for path in (run / "checkpoints").glob("*.ckpt"):  # what the run left is finite or named as not
        weights = torch.load(path, weights_only=True)["state_dict"]
        finite = all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
        assert finite == (record["last_finite_checkpoint"] == str(path))
