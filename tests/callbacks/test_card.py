"""Reproduction cards: the comparison rule, the callback's JSON and the report table."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lit_papers.callbacks.atomic_checkpoint import FinalLastCheckpoint
from lit_papers.callbacks.card import ReproductionCard, compare, load_card


def test_compare_lower_is_better_with_scale():
    row = {"metric": "test/error", "value": 8.75, "scale": 100, "tolerance": 0.5, "higher_is_better": False,
           "source": "Table 6", "kind": "paper"}
    assert compare(row, 0.0900) == pytest.approx({**compare(row, 0.09), "ours": 9.0, "delta": 0.25, "pass": True})
    assert compare(row, 0.0930)["pass"] is False  # 0.55 worse than the paper
    assert compare(row, 0.0500)["pass"] is True  # better than the paper always passes
    assert compare(row, 0.0930)["delta"] == pytest.approx(0.55)


def test_compare_higher_is_better():
    row = {"metric": "test/acc", "value": 96.0, "scale": 100, "tolerance": 1.0, "source": "Table 1", "kind": "paper"}
    assert compare(row, 0.952)["pass"] is True
    assert compare(row, 0.949)["pass"] is False


def test_bad_card_is_rejected(tmp_path):
    (tmp_path / "card.yaml").write_text(yaml.safe_dump({"results": [{"variant": "x", "metric": "m"}]}))
    with pytest.raises(ValueError, match="lacks"):
        load_card(tmp_path / "card.yaml")


class _Constant(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, batch_idx):
        self.log("test/error", torch.tensor(0.1))


class _Trainable(_Constant):
    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_test_from_checkpoint_reports_the_training_that_made_it(tmp_path):
    """max_steps between validations still ends with last.ckpt at the final step, and a later `test` on it
    reports that run's steps and fit time (carried in the checkpoint), not 0."""
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"paper": "Toy", "results": [
        {"variant": "toy", "metric": "test/error", "value": 8.0, "source": "Table 1", "kind": "paper"}]}))
    data = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=1)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0)
    trainer = L.Trainer(max_steps=3, limit_val_batches=0, logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, enable_model_summary=False,
                        callbacks=[ckpt, FinalLastCheckpoint(), ReproductionCard(card_path=str(card), variant="toy")])
    trainer.fit(_Trainable(), data)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    tester = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path / "test",
                       callbacks=[ReproductionCard(run_dir=str(tmp_path / "test"), card_path=str(card), variant="toy")])
    tester.test(_Trainable(), data, ckpt_path=str(last), verbose=False)
    evidence = json.loads((tmp_path / "test" / "card_result.json").read_text())[0]["evidence"]
    assert evidence["global_step"] == 3
    assert evidence["fit_time_s"] is not None and evidence["fit_time_s"] >= 0


def test_a_resumed_run_records_each_attempt_with_its_commit_and_steps(tmp_path, monkeypatch):
    """Two fit attempts (3 steps on one commit, resumed to 5 on another): the evidence lists both, so a card
    can say that the weights were not trained by one clean commit; the report says so next to the row."""
    from lit_papers.callbacks import card as card_module

    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"paper": "Toy", "results": [
        {"variant": "toy", "metric": "test/error", "value": 8.0, "source": "Table 1", "kind": "paper"}]}))
    data = DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=1)

    def attempt(commit, max_steps, ckpt_path=None):
        monkeypatch.setattr(card_module, "git_commit", lambda: commit)
        trainer = L.Trainer(max_steps=max_steps, limit_val_batches=0, logger=False, enable_progress_bar=False,
                            default_root_dir=tmp_path, enable_model_summary=False,
                            callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0),
                                       FinalLastCheckpoint(),
                                       ReproductionCard(run_dir=str(tmp_path), card_path=str(card), variant="toy")])
        trainer.fit(_Trainable(), data, ckpt_path=ckpt_path)
        trainer.test(_Trainable(), data, verbose=False)
        return json.loads((tmp_path / "card_result.json").read_text())[0]["evidence"]

    first = attempt("aaaaaaaaaaaa", 3)
    assert [(a["commit"], a["from_step"], a["to_step"]) for a in first["attempts"]] == [("aaaaaaaaaaaa", 0, 3)]
    second = attempt("bbbbbbbbbbbb-dirty", 5, ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    assert [(a["commit"], a["from_step"], a["to_step"]) for a in second["attempts"]] == [
        ("aaaaaaaaaaaa", 0, 3), ("bbbbbbbbbbbb-dirty", 3, 5)]
    assert second["fit_time_s"] == pytest.approx(sum(a["fit_s"] for a in second["attempts"]), abs=0.2)

    from lit_papers.launch.report import evidence_text

    text = evidence_text({"evidence": second, "result_file": "r.json", "paper": "toy"})
    assert "in 2 attempts" in text and "trained by** `aaaaaaaaaa`, `bbbbbbbbbb-dirty`" in text
    one = evidence_text({"evidence": first, "result_file": "r.json", "paper": "toy"})
    assert "attempts" not in one and "trained by" not in one


def test_callback_writes_json_with_evidence(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"paper": "Toy", "results": [
        {"variant": "toy", "metric": "test/error", "scale": 100, "value": 8.0, "source": "Table 1", "tolerance": 1.0,
         "higher_is_better": False, "kind": "paper"},
        {"variant": "other", "metric": "test/error", "value": 1.0, "source": "Table 2", "kind": "paper"}]}))
    callback = ReproductionCard(run_dir=str(tmp_path), variant="toy", config_paths=["configs/toy/toy.yaml"], seed=7,
                                card_path=str(card))
    trainer = L.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.test(_Constant(), DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1), verbose=False)
    rows = json.loads((tmp_path / "card_result.json").read_text())
    assert len(rows) == 1
    row = rows[0]
    assert (row["variant"], row["ours"], row["paper_value"], row["pass"]) == ("toy", 10.0, 8.0, False)
    assert row["delta"] == pytest.approx(2.0)
    evidence = row["evidence"]
    assert evidence["seed"] == 7 and evidence["config"] == ["configs/toy/toy.yaml"]
    assert {"torch", "lightning", "python"} <= set(evidence["versions"])
    assert evidence["hardware"]["cpu_count"] >= 1 and evidence["wall_time_s"] >= 0
    alone = json.loads((tmp_path / "evidence.json").read_text())  # the same evidence, without the rows
    assert {k: v for k, v in alone.items() if k not in ("date", "wall_time_s")} == {
        k: v for k, v in evidence.items() if k not in ("date", "wall_time_s")}


def test_a_variant_without_card_rows_still_records_its_evidence(tmp_path):
    """A tested run whose variant has no card row (e.g. random_labels' p = 0.2 .. 0.8, which only the aggregated
    Figure 1 rows use) writes evidence.json (commit, seed, config, hardware) and no card_result.json."""
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"paper": "Toy", "results": [
        {"variant": "other", "metric": "test/error", "value": 1.0, "source": "Table 2", "kind": "paper"}]}))
    callback = ReproductionCard(run_dir=str(tmp_path), variant="toy_p20", config_paths=["configs/toy/toy_p20.yaml"],
                                seed=3, card_path=str(card))
    trainer = L.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.test(_Constant(), DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1), verbose=False)
    assert not (tmp_path / "card_result.json").exists()
    evidence = json.loads((tmp_path / "evidence.json").read_text())
    assert evidence["seed"] == 3 and evidence["config"] == ["configs/toy/toy_p20.yaml"]
    assert evidence["git_commit"] == callback.git_commit and evidence["hardware"]["cpu_count"] >= 1
