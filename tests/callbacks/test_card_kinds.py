"""Row kinds, intervals and verdicts of reproduction cards; a card describes the run that was made."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from lit_papers.callbacks.card import (
    ReproductionCard,
    ablation_verdict,
    compare,
    data_overrides,
    interval,
    load_card,
    verdict,
    wilson,
)

REPO = Path(__file__).resolve().parents[2]
CARDS = sorted((REPO / "lit_papers" / "papers").glob("*/card.yaml"))


@pytest.mark.parametrize("card", CARDS, ids=[c.parent.name for c in CARDS])
def test_every_card_row_has_a_valid_kind(card):
    rows = load_card(card)["results"]
    assert rows and all(r["kind"] in ("paper", "scaled", "ablation", "target", "variant") for r in rows)


def _card(tmp_path, **row):
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump({"results": [{"variant": "v", "metric": "test/acc", "value": 1.0, "source": "T1",
                                                 **row}]}))
    return path


def test_card_rows_without_kind_or_group_or_with_two_headlines_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"results\[0\].*kind is None; set `kind:`"):
        load_card(_card(tmp_path))
    with pytest.raises(ValueError, match="kind is 'papr'"):
        load_card(_card(tmp_path, kind="papr"))
    with pytest.raises(ValueError, match="needs `group:`"):
        load_card(_card(tmp_path, kind="ablation"))
    path = tmp_path / "two.yaml"
    row = {"variant": "v", "metric": "m", "value": 1, "source": "s", "kind": "paper", "headline": True}
    path.write_text(yaml.safe_dump({"results": [row, {**row, "variant": "w"}]}))
    with pytest.raises(ValueError, match="headline"):
        load_card(path)


def test_wilson_matches_hand_computed_cases():
    # p = 0, n = 10: the upper end is z^2 / (n + z^2)
    low, high = wilson(0.0, 10, z=1.96)
    assert low == 0.0 and high == pytest.approx(1.96**2 / (10 + 1.96**2), abs=1e-12)
    # p = 0.85, n = 400 (the official runs: 400 queries), by hand with z = 1.96:
    # centre = (0.85 + 3.8416/800) / (1 + 3.8416/400) = 0.846671; half = 1.96/1.009604 * sqrt(0.00031875 + 3.8416/640000)
    low, high = wilson(0.85, 400, z=1.96)
    assert low == pytest.approx(0.811686, abs=2e-6) and high == pytest.approx(0.881656, abs=2e-6)


def test_interval_prefers_the_logged_half_width_and_needs_it_for_episode_means():
    assert interval(90.0, scale=100, ci95=1.5, n=400) == (88.5, 91.5, "logged")
    low, high, how = interval(85.0, scale=100, n=400)
    assert how == "wilson" and (low, high) == pytest.approx([100 * x for x in wilson(0.85, 400)], abs=1e-9)
    assert (low, high) == pytest.approx((81.17, 88.17), abs=0.01)  # z = 1.95996 vs the hand case's 1.96
    assert interval(97.3, scale=100, n=1000, n_unit="episodes") is None  # mean over episodes: no Wilson
    assert interval(0.9, n=100, binomial=False) is None  # an AP is not a proportion of trials
    assert interval(0.3, scale=1, n=100) is not None and interval(30.0, scale=1, n=100) is None  # not a fraction


ROW = {"variant": "v", "metric": "test/acc", "value": 90.0, "source": "T", "tolerance": 0.5}


@pytest.mark.parametrize("kind, extra, ours, low, high, status", [
    ("paper", {}, 89.0, 88.6, 89.6, "pass"),          # interval reaches 90 within 0.5
    ("paper", {}, 89.0, 88.4, 89.4, "fail"),          # 89.4 < 89.5
    ("paper", {}, 95.0, 94.0, 96.0, "pass"),          # beating the paper's method is fine
    ("paper", {"baseline": True}, 95.0, 94.0, 96.0, "discrepancy"),  # a baseline far above the paper's baseline
    ("paper", {"baseline": True}, 91.0, 90.2, 91.8, "pass"),          # within tolerance of it
    ("scaled", {}, 95.0, 94.0, 96.0, "context"),     # scaled: never a pass, whatever the number
    ("scaled", {}, 70.0, None, None, "context"),
    ("scaled", {"baseline": True}, 95.0, 94.0, 96.0, "discrepancy"),
    ("target", {}, 91.0, 87.8, 93.4, "open"),         # the 91% on 400 queries: the target is inside the interval
    ("target", {}, 92.0, 90.6, 93.4, "pass"),
    ("target", {}, 85.0, 81.2, 88.2, "fail"),
    ("target", {"higher_is_better": False, "value": 0.274, "tolerance": 0}, 0.08, 0.07, 0.09, "pass"),
    ("target", {"higher_is_better": False, "value": 0.274, "tolerance": 0}, 0.32, 0.30, 0.34, "fail"),
    ("target", {"value": 0.0, "tolerance": 0}, 0.0, 0.0, 0.0, "pass"),                    # >= 0 reached
    ("target", {"value": 0.0, "tolerance": 0, "strict": True}, 0.0, 0.0, 0.0, "fail"),    # > 0 not passed
    ("target", {"value": 0.0, "tolerance": 0, "strict": True}, 0.01, -0.01, 0.03, "open"),
    ("target", {"value": 0.0, "tolerance": 0, "strict": True}, 0.05, 0.01, 0.09, "pass"),
    ("variant", {}, 99.0, 98.0, 100.0, "none"),
])
def test_verdict_depends_on_the_kind(kind, extra, ours, low, high, status):
    got, text = verdict({**ROW, **extra, "kind": kind}, ours, low, high)
    assert got == status
    assert ("✅" in text) == (status == "pass")


def _arm(variant, value, ours, half):
    row = {**ROW, "variant": variant, "value": value, "kind": "ablation", "group": "g"}
    return {"row": row, "ours": ours, "low": None if half is None else ours - half,
            "high": None if half is None else ours + half}


def test_ablation_passes_when_the_papers_difference_holds_outside_the_intervals():
    paper_a, paper_b = 93.0, 91.0  # the paper: arm a beats arm b by 2 points
    assert ablation_verdict(_arm("a", paper_a, 85.0, 0.5), [_arm("b", paper_b, 83.0, 0.5)])[0] == "pass"
    assert ablation_verdict(_arm("b", paper_b, 83.0, 0.5), [_arm("a", paper_a, 85.0, 0.5)])[0] == "pass"
    assert ablation_verdict(_arm("a", paper_a, 85.0, 1.5), [_arm("b", paper_b, 83.0, 1.5)])[0] == "fail"  # overlap
    assert ablation_verdict(_arm("a", paper_a, 83.0, 0.5), [_arm("b", paper_b, 85.0, 0.5)])[0] == "fail"  # reversed
    sized = _arm("a", paper_a, 90.0, 0.5)
    sized["row"]["difference_tolerance"] = 1.0
    assert ablation_verdict(sized, [_arm("b", paper_b, 83.0, 0.5)])[0] == "fail"  # +7 vs the paper's +2
    assert ablation_verdict(_arm("a", paper_a, 85.0, 0.5), [_arm("b", paper_b, None, None)])[0] == "open"


class _Logs(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def test_step(self, batch, batch_idx):
        self.log("test/acc", torch.tensor(0.91))
        self.log("test/acc_n", torch.tensor(400.0))
        self.log("test/loss", torch.tensor(0.3))


def test_callback_stores_the_logged_count_and_half_width(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text(yaml.safe_dump({"results": [
        {"variant": "toy", "metric": "test/acc", "scale": 100, "value": 90.0, "source": "T", "kind": "target"}]}))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        callbacks=[ReproductionCard(run_dir=str(tmp_path), variant="toy", card_path=str(card))])
    trainer.test(_Logs(), DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1), verbose=False)
    row = json.loads((tmp_path / "card_result.json").read_text())[0]
    assert row["n"] == 400 and row["ci95"] is None and row["interval"] == "wilson"
    assert (row["low"], row["high"]) == pytest.approx([100 * x for x in wilson(0.91, 400)], abs=1e-4)
    assert row["status"] == "open" and row["pass"] is None  # 90 lies inside [87.8, 93.4]
    with_ci = compare({**ROW, "scale": 100, "kind": "target"}, 0.91, ci95=0.005, n=400)
    assert (with_ci["ci95"], with_ci["low"], with_ci["high"]) == pytest.approx((0.5, 90.5, 91.5))
    assert with_ci["interval"] == "logged" and with_ci["status"] == "pass"  # the logged half-width wins over n


class _Data:
    def __init__(self, *, root: str | None = None, size: int = 5, sizes: tuple = (1, 2)) -> None:
        pass


def test_data_overrides_against_the_variant_file_and_the_constructor_defaults():
    variant = {"class_path": "x.Data", "init_args": {"size": 5}}
    same = {"class_path": "x.Data", "init_args": {"root": None, "size": 5, "sizes": [1, 2]}}
    assert data_overrides(same, variant, _Data) == []
    assert data_overrides({**same, "init_args": {**same["init_args"], "size": 6}}, variant, _Data) == [
        "data.init_args.size"]
    assert data_overrides({**same, "init_args": {**same["init_args"], "root": "/other"}}, variant, _Data) == [
        "data.init_args.root"]
    assert data_overrides({**same, "class_path": "y.Other"}, variant, _Data) == ["data.class_path"]


def test_a_test_run_with_overridden_data_writes_a_variant_card(tmp_path, cli, shared_data):
    """A real `lit-papers test` from a recipe named after a card row (resnet20_subset, tiny settings) with its data
    overridden on the command line: its card rows become `variant` rows that name the overridden key, record the
    data actually used, and are not compared with the paper. (That no recipe *as given* reads as overridden is
    checked over every config below, without a run.)"""
    recipe = yaml.safe_load((REPO / "configs" / "resnet_cifar" / "tiny.yaml").read_text())
    folder = tmp_path / "configs" / "resnet_cifar"
    folder.mkdir(parents=True)
    config = folder / "resnet20_subset.yaml"
    config.write_text(yaml.safe_dump(recipe))
    assert recipe["data"]["init_args"]["val_size"] == 500
    cli("test", "--config", str(config), "--wandb", "false", "--trainer.limit_test_batches", "1",
        "--run.version", "other", "--data.init_args.val_size", "100")
    rows = json.loads((cli.runs / "resnet_cifar" / "resnet20_subset" / "other" / "card_result.json").read_text())
    card = {r["metric"]: r for r in load_card(REPO / "lit_papers/papers/resnet_cifar/card.yaml")["results"]
            if r["variant"] == "resnet20_subset"}
    assert {r["metric"] for r in rows} == set(card)
    assert all(r["kind"] == "variant" and r["card_kind"] == card[r["metric"]]["kind"] for r in rows)
    assert all(r["pass"] is None and r["overridden"] == ["data.init_args.val_size"] for r in rows)
    assert all("not compared with the paper" in r["note"] and "2,000 training" not in r["note"] for r in rows)
    evidence = rows[0]["evidence"]
    assert evidence["data"]["init_args"]["val_size"] == 100
    assert evidence["train_items"] == 2400  # the sample's 2,500 training images less the 100 held out


CONFIGS = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "trainer")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_config_as_given_reads_as_overridden_data(config):
    """The data section as the CLI resolves it (every default filled in by jsonargparse) against the config file
    alone: no key may look overridden, or every real run of that recipe would be filed as a variant."""
    import importlib

    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    from lit_papers.callbacks.card import data_section

    given = yaml.safe_load(config.read_text())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", fail_untyped=False, required=True)
    parsed = parser.parse_object({"data": yaml.safe_load(config.read_text())["data"]})  # (parsing edits its input)
    resolved = yaml.safe_load(parser.dump(parsed, skip_none=False))  # as the CLI saves config.yaml
    resolved_data, variant = data_section(resolved), data_section(given)
    module, name = resolved_data["class_path"].rsplit(".", 1)
    datamodule = getattr(importlib.import_module(module), name)
    assert len(resolved_data["init_args"]) > len(variant["init_args"]) or variant["init_args"] == resolved_data[
        "init_args"]
    assert data_overrides(resolved_data, variant, datamodule) == []
    resolved_data["init_args"]["root"] = "/another/root"  # and a real override is seen
    assert data_overrides(resolved_data, variant, datamodule) == ["data.init_args.root"]
