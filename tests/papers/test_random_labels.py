"""Zhang et al. 2017 (random labels): the small Inception and MLPs against Table 1's parameter counts and Figure 3's
shapes, the preprocessing against float64 oracles, the time-to-fit logic on a tiny set it can fit, the configs of
the subset series, and the Figure 1 aggregation on hand-made run folders."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, TensorDataset

from lit_papers.papers.random_labels import fig1
from lit_papers.papers.random_labels.model import (
    MLP,
    CenterCrop,
    DownsampleModule,
    InceptionModule,
    SmallInception,
    per_image_standardization,
)
from lit_papers.papers.random_labels.module import RandomLabelsLitModule
from tests.conftest import REPO


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- the networks ------------------------------------------------------------------------------------------
def test_parameter_counts_are_table_1s():
    """Table 1 (CIFAR-10): Inception and Inception w/o BatchNorm 1,649,402; MLP 1x512 1,209,866; MLP 3x512
    1,735,178 (the MLP counts need the 28x28x3 crop: 2352 inputs)."""
    assert count(SmallInception()) == 1_649_402
    assert count(SmallInception(batch_norm=False)) == 1_649_402
    assert count(MLP(hidden=[512])) == 1_209_866 == 2352 * 512 + 512 + 512 * 10 + 10
    assert count(MLP(hidden=[512, 512, 512])) == 1_735_178
    assert count(SmallInception(bn_scale=True)) == 1_649_402 + 1_712  # + one gamma per conv channel


def test_small_inception_follows_figure_3():
    model = SmallInception().eval()
    sizes = []
    hooks = [block.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:])))
             for block in model.features]
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert out.shape == (2, 10)
    assert sizes == [(96, 28, 28), (64, 28, 28), (80, 28, 28), (160, 14, 14), (160, 14, 14), (160, 14, 14),
                     (160, 14, 14), (144, 14, 14), (240, 7, 7), (336, 7, 7), (336, 7, 7)]
    assert [type(b).__name__ for b in model.features].count("DownsampleModule") == 2


def test_inception_and_downsample_modules_concatenate_their_branches():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 8)
    inception = InceptionModule(6, 3, 5).eval()
    out = inception(x)
    assert out.shape == (2, 8, 8, 8)
    assert torch.allclose(out[:, :3], inception.branch1(x)) and torch.allclose(out[:, 3:], inception.branch3(x))
    down = DownsampleModule(6, 4).eval()
    out = down(x)
    assert out.shape == (2, 10, 4, 4)
    # the pooled half: a 3x3 / stride 2 max over the input, -inf padding (an independent max over the windows)
    padded = F.pad(x.double(), (1, 1, 1, 1), value=-math.inf)
    expected = torch.stack([torch.stack([padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].amax(dim=(2, 3))
                                         for j in range(4)], dim=-1) for i in range(4)], dim=-2)
    assert torch.allclose(out[:, 4:].double(), expected)
    assert torch.allclose(out[:, :4], down.conv(x))


def test_batch_norm_without_scale_normalises_then_shifts():
    module = InceptionModule(3, 2, 2).branch1  # Conv -> BN (no affine) -> shift -> ReLU
    kinds = [type(m).__name__ for m in module]
    assert kinds == ["Conv2d", "BatchNorm2d", "ChannelShift", "ReLU"] and module[1].affine is False
    assert module[0].bias is None
    x = torch.randn(8, 3, 5, 5)
    module[2].beta.data = torch.tensor([0.5, -10.0])
    out = module.train()(x)
    conv = module[0](x).double()
    normed = (conv - conv.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
        conv.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
    expected = torch.relu(normed + torch.tensor([0.5, -10.0], dtype=torch.float64).view(1, -1, 1, 1))
    assert torch.allclose(out.double(), expected, atol=1e-5)


def test_preprocessing_crop_and_per_image_standardisation():
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(CenterCrop(28)(x), x[..., 2:30, 2:30])
    with pytest.raises(ValueError, match="at least 28"):
        CenterCrop(28)(torch.rand(1, 3, 20, 20))
    x[2] = 0.25  # a constant image: std 0, the adjusted std 1/sqrt(N) keeps it finite (all zeros)
    y = per_image_standardization(x).double().numpy()
    flat = x.double().numpy().reshape(3, -1)
    std = np.maximum(flat.std(axis=1), 1 / np.sqrt(flat.shape[1]))
    expected = ((flat - flat.mean(axis=1, keepdims=True)) / std[:, None]).reshape(y.shape)
    assert np.allclose(y, expected, atol=1e-5)
    assert np.abs(y[:2].reshape(2, -1).mean(axis=1)).max() < 1e-5
    assert np.allclose(y[:2].reshape(2, -1).std(axis=1), 1, atol=1e-4) and np.all(y[2] == 0)


# -- time to fit -----------------------------------------------------------------------------------------------
class Memorise(L.LightningDataModule):
    """64 random images with random labels; validated on the same images as ``train_eval``."""

    val_loader_names = ["train_eval"]

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.data = TensorDataset(torch.rand(64, 3, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g))

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.data, batch_size=64)

    def test_dataloader(self):
        return DataLoader(self.data, batch_size=64)


class Accuracies(L.Callback):
    def __init__(self):
        self.seen = []

    def on_validation_epoch_end(self, trainer, pl_module):
        self.seen.append((trainer.global_step, float(trainer.callback_metrics["train_eval/acc"])))


@pytest.mark.parametrize("stop", [True, False])
def test_time_to_fit_is_the_first_validation_at_full_training_accuracy(stop, tmp_path):
    L.seed_everything(0)
    model = MLP(hidden=[128], crop=None, input_size=8)
    module = RandomLabelsLitModule(model=model, optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                                   stop_when_fit=stop)
    seen = Accuracies()
    trainer = L.Trainer(max_epochs=60, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[seen], default_root_dir=tmp_path)
    trainer.fit(module, datamodule=Memorise())
    fitted = [step for step, acc in seen.seen if acc >= 1.0]
    assert fitted, f"the MLP should memorise 64 random labels in 60 epochs: {seen.seen[-3:]}"
    assert module.fit_step == fitted[0] and module.fit_epoch == fitted[0] // 4  # 4 steps per epoch
    assert all(acc < 1.0 for step, acc in seen.seen if step < fitted[0])
    assert (trainer.global_step == fitted[0]) == stop, "stop_when_fit stops at the fit, else runs on"
    trainer.test(module, datamodule=Memorise(), verbose=False)
    metrics = trainer.callback_metrics
    assert float(metrics["fit/steps_to_fit"]) == fitted[0] and float(metrics["fit/reached"]) == 1.0
    assert float(metrics["fit/train_acc"]) == seen.seen[-1][1] and float(metrics["fit/train_acc_n"]) == 64
    assert float(metrics["test/acc_n"]) == 64


def test_bad_fit_threshold_is_an_error():
    with pytest.raises(ValueError, match="fit_threshold=0"):
        RandomLabelsLitModule(model=MLP(), optimizer=torch.optim.SGD, fit_threshold=0)


# -- configs ---------------------------------------------------------------------------------------------------
CONFIGS = REPO / "configs" / "random_labels"
SERIES = {"true": (0.0, "none"), "p20": (0.2, "none"), "p40": (0.4, "none"), "p60": (0.6, "none"),
          "p80": (0.8, "none"), "random_labels": (1.0, "none"), "shuffled_pixels": (0.0, "shuffled_pixels"),
          "random_pixels": (0.0, "random_pixels"), "gaussian": (0.0, "gaussian")}


def test_the_subset_series_differs_only_in_the_corruption():
    base = None
    for name, (p, image) in SERIES.items():
        config = yaml.safe_load((CONFIGS / f"mlp_subset_{name}.yaml").read_text())
        data = config["data"]["init_args"]
        assert (data["label_noise"], data["image_corruption"]) == (p, image), name
        data.pop("label_noise"), data.pop("image_corruption")
        base = base or config
        assert config == base, f"mlp_subset_{name}.yaml differs from mlp_subset_true.yaml beyond the corruption"
    assert base["data"]["init_args"]["augment"] is False and base["data"]["init_args"]["eval_train"] is True
    optimizer = base["model"]["init_args"]["optimizer"]["init_args"]
    assert optimizer == {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0}
    assert "scheduler" not in base["model"]["init_args"], "a constant learning rate for the time to fit"


# -- Figure 1 aggregation on hand-made runs ---------------------------------------------------------------------
def _run(root: Path, variant: str, seed: int, *, fit_step: int | None, test_acc: float, losses=(2.3, 1.0)):
    folder = root / "random_labels" / variant / f"seed{seed}"
    (folder / "csv").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed_everything": seed}))
    rows = [{"step": 4 * k, "train/loss": loss} for k, loss in enumerate(losses)]
    rows.append({"step": 9, "train_eval/acc": 1.0 if fit_step else 0.5, **({"fit/steps": fit_step} if fit_step else {})})
    rows.append({"step": 10, "test/acc": test_acc, "test/acc_n": 500, "fit/train_acc": 1.0 if fit_step else 0.5,
                 "fit/train_acc_n": 2000})
    names = ["step", "train/loss", "train_eval/acc", "fit/steps", "test/acc", "test/acc_n", "fit/train_acc",
             "fit/train_acc_n"]
    with open(folder / "csv" / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "card_result.json").write_text(json.dumps([{"evidence": {
        "git_commit": "abc", "config": [f"configs/random_labels/{variant}.yaml"], "wall_time_s": 10.0,
        "hardware": {"cpu": "x"}, "versions": {"torch": "y"}, "run_dir": str(folder)}}]))


def test_figure_1_rows_pictures_and_ratio_from_run_folders(tmp_path):
    steps = {"true": [100, 120, 110], "random_labels": [300, 240, 330]}
    accs = {"true": 0.40, "p20": 0.35, "p40": 0.30, "p60": 0.22, "p80": 0.15, "random_labels": 0.10}
    for name, acc in accs.items():
        for seed in range(3):
            fit_step = steps.get(name, [200, 200, 200])[seed]
            _run(tmp_path, f"mlp_subset_{name}", seed, fit_step=fit_step, test_acc=acc + 0.01 * seed)
    _run(tmp_path, "mlp_subset_gaussian", 0, fit_step=None, test_acc=0.1)
    out = tmp_path / "results"
    rows = fig1.main([str(tmp_path), "--out", str(out)])
    by = {(r["variant"], r["metric"]): r for r in rows}
    ratio = by[("mlp_subset_random_labels", "fit/steps_ratio_vs_true")]
    per_seed = [3.0, 2.0, 3.0]  # paired by seed: 300/100, 240/120, 330/110
    assert ratio["ours"] == pytest.approx(np.mean(per_seed))
    half = 4.302652729911275 * np.std(per_seed, ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
    assert ratio["ci95"] == pytest.approx(half, rel=1e-6) and ratio["n"] == 3 and ratio["n_unit"] == "seeds"
    rho = by[("mlp_subset_random_labels", "fig1c/error_growth_spearman")]
    assert rho["ours"] == pytest.approx(1.0)  # the error grows at every step of p, in every seed
    assert rho["ci95"] == pytest.approx(0.0) and rho["n"] == 3 and rho["n_unit"] == "seeds"
    test = by[("mlp_subset_true", "test/acc")]  # in the card's units (scale 100)
    assert test["ours"] == pytest.approx(41.0) and test["n"] == 500  # mean of 0.40, 0.41, 0.42
    gaussian = by[("mlp_subset_gaussian", "fit/train_acc")]
    assert gaussian["ours"] == 50.0 and gaussian["n"] == 2000 and gaussian["seeds"] == [0]
    assert ("mlp_subset_gaussian", "fit/steps_to_fit") not in by, "a run that never fit has no time to fit"
    assert by[("mlp_subset_true", "fit/steps_to_fit")]["ours"] == pytest.approx(110.0)
    assert all(r["evidence"]["git_commit"] == "abc" for r in rows)
    for name in ("fig1a_loss.png", "fig1b_time_to_fit.png", "fig1c_test_error.png"):
        assert (out / name).stat().st_size > 1000
    saved = json.loads((out / "fig1.json").read_text())
    assert len(saved) == len(rows)


def test_figure_1_refuses_runs_of_different_commits(tmp_path):
    _run(tmp_path, "mlp_subset_true", 0, fit_step=10, test_acc=0.4)
    _run(tmp_path, "mlp_subset_random_labels", 0, fit_step=30, test_acc=0.1)
    path = tmp_path / "random_labels" / "mlp_subset_true" / "seed0" / "card_result.json"
    path.write_text(path.read_text().replace('"abc"', '"def"'))
    with pytest.raises(SystemExit, match="different commits"):
        fig1.main([str(tmp_path), "--out", str(tmp_path / "results")])


def test_commits_agreeing_on_the_number_files_are_one_experiment():
    import subprocess

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    first = subprocess.run(["git", "-C", str(REPO), "rev-list", "--max-parents=0", "HEAD"], capture_output=True,
                           text=True).stdout.split()[0]  # the root commit: no random_labels code yet
    assert fig1.same_numbers([head, head])
    assert not fig1.same_numbers([head, first])
    assert not fig1.same_numbers([head, head + "-dirty"]) and not fig1.same_numbers([head, "None"])


def test_spearman_interval_is_over_seeds_and_each_seed_ranks_its_own_errors(tmp_path):
    """Seed 1 swaps p = 0.4 and 0.6 (its own errors): rho = 1 - 6 * 2 / (6 * 35) = 0.942857 (n = 6 levels, one
    adjacent swap), seeds 0 and 2 rank perfectly; the row is their mean +- t(0.975, 2) * sd / sqrt(3). A p level
    missing in a seed drops that seed from the interval; runs with only evidence.json count with their commit."""
    accs = {"true": 0.40, "p20": 0.35, "p40": 0.30, "p60": 0.22, "p80": 0.15, "random_labels": 0.10}
    for name, acc in accs.items():
        for seed in range(3):
            swapped = {"p40": 0.22, "p60": 0.30}.get(name, acc) if seed == 1 else acc
            _run(tmp_path, f"mlp_subset_{name}", seed, fit_step=200, test_acc=swapped)
    _run(tmp_path, "mlp_subset_true", 3, fit_step=200, test_acc=0.4)  # seed 3 has no other level: not counted
    for seed in range(3):  # p = 0.2 has no card row: its runs write evidence.json only (callbacks/card.py)
        folder = tmp_path / "random_labels" / "mlp_subset_p20" / f"seed{seed}"
        (row,) = json.loads((folder / "card_result.json").read_text())
        (folder / "evidence.json").write_text(json.dumps(row["evidence"]))
        (folder / "card_result.json").unlink()
    rows = fig1.main([str(tmp_path), "--out", str(tmp_path / "results")])
    (rho,) = [r for r in rows if r["metric"] == "fig1c/error_growth_spearman"]
    per_seed = [1.0, 1 - 6 * 2 / (6 * 35), 1.0]
    assert rho["seed_values"] == [round(v, 4) for v in per_seed]
    assert rho["ours"] == pytest.approx(np.mean(per_seed))
    assert rho["ci95"] == pytest.approx(4.302652729911275 * np.std(per_seed, ddof=1) / np.sqrt(3), abs=1e-6)
    assert rho["n"] == 3 and rho["n_unit"] == "seeds"
    assert rho["evidence"]["git_commit"] == "abc"  # one commit over all runs, the evidence.json ones included


def test_mixed_commits_are_dirty_unless_verified_to_agree_on_the_numbers():
    """Runs of two clean commits that collect_runs verified (same_numbers) are one experiment: the row keeps a clean
    commit and the report lists both; unverified (--accept-unverified), a dirty or an unknown commit: flagged."""
    from lit_papers.launch.report import evidence_text

    def run(commit, agree):
        return {"folder": f"/r/{commit}", "seed": 0, "values": {"fit/steps": 10}, "same_numbers": agree,
                "evidence": {"git_commit": commit, "hardware": {"cpu_count": 2}, "versions": {"torch": "t"}}}

    ok = fig1._evidence("mlp_subset_true", [run("a" * 40, True), run("b" * 40, True)])
    assert ok["git_commit"] == "a" * 40
    assert "runs of `aaaaaaaaaa`, `bbbbbbbbbb`" in evidence_text({"evidence": ok, "result_file": "f.json", "paper": "p"})
    unverified = fig1._evidence("mlp_subset_true", [run("a" * 40, False), run("b" * 40, False)])
    assert unverified["git_commit"].endswith("-dirty")
    assert "dirty tree" in evidence_text({"evidence": unverified, "result_file": "f.json", "paper": "p"})
    assert fig1._evidence("mlp_subset_true", [run("a" * 40, True), run(None, True)])["git_commit"].endswith("-dirty")
    assert fig1._evidence("mlp_subset_true", [run("a" * 40 + "-dirty", True)])["git_commit"].endswith("-dirty")
