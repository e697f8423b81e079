"""MANN and the LSTM baseline: the delayed-label protocol, per-instance accuracy bookkeeping, the tiny recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_papers.papers.mann.model import LSTMBaseline, MemoryAugmentedNetwork, shifted_one_hot
from lit_papers.papers.mann.module import instance_numbers


def test_labels_are_shown_one_step_late():
    y = torch.tensor([[2, 0, 1]])
    assert shifted_one_hot(y, 3).tolist() == [[[0, 0, 0], [0, 0, 1], [1, 0, 0]]]


def test_instance_numbers():
    y = torch.tensor([[0, 1, 0, 0, 2, 1]])
    assert instance_numbers(y, 3).tolist() == [[1, 1, 2, 3, 1, 2]]


def test_prediction_at_t_never_sees_the_label_of_t():
    torch.manual_seed(0)
    mann = dict(input_size=16, num_classes=3, hidden_size=8, memory_slots=6, memory_width=4, read_heads=2)
    for model in (MemoryAugmentedNetwork(**mann), MemoryAugmentedNetwork(**mann, separate_values=True, key_strength=True),
                  LSTMBaseline(input_size=16, num_classes=3, hidden_size=8)):
        x = torch.rand(2, 5, 1, 4, 4)
        y = torch.randint(0, 3, (2, 5))
        y2 = y.clone()
        y2[:, 3] = (y[:, 3] + 1) % 3
        a, b = model(x, y), model(x, y2)
        torch.testing.assert_close(a[:, :4], b[:, :4])  # steps 0..3 unaffected by the label of step 3
        assert not torch.allclose(a[:, 4], b[:, 4])  # step 4 sees it


@pytest.mark.parametrize("options", [{}, {"separate_values": True, "key_strength": True}])
def test_every_mann_parameter_gets_a_gradient(options):
    torch.manual_seed(0)
    model = MemoryAugmentedNetwork(input_size=16, num_classes=3, hidden_size=8, memory_slots=6, memory_width=4,
                                   read_heads=2, **options)
    x, y = torch.rand(2, 6, 1, 4, 4), torch.randint(0, 3, (2, 6))
    torch.nn.functional.cross_entropy(model(x, y).transpose(1, 2), y).backward()
    names = {name for name, _ in model.named_parameters()}
    assert ("value.weight" in names) == bool(options) and ("strength.weight" in names) == bool(options)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_tiny_fit_and_test_on_the_real_data(cli, tiny_fit):
    tiny_fit("mann", into=cli.runs)  # the session's shared fit (conftest.py)
    ckpt = cli.runs / "mann" / "tiny" / "v0" / "checkpoints" / "last.ckpt"
    proc = cli("test", "--config", "configs/mann/tiny.yaml", "--wandb", "false", "--ckpt_path", str(ckpt))
    for k in (1, 2, 3, 4):
        assert f"test/acc_inst{k}" in proc.stdout
    assert "test/acc_inst4_ci95" in proc.stdout and "test/acc_inst4_n" in proc.stdout


def test_instance_curves_put_each_point_where_its_accuracy_is(tmp_path):
    import json

    from PIL import Image

    from lit_papers.papers.mann.curves import COLORS, Frame, draw_curves, series_from_results

    rows = lambda ours, paper, source: [  # noqa: E731
        {"metric": f"test/acc_inst{k}", "ours": o, "paper_value": p, "source": source}
        for k, o, p in zip((1, 2, 3, 5, 10), ours, paper)]
    (tmp_path / "a.json").write_text(json.dumps(rows([30, 75, 85, 88, 90], [36, 83, 91, 95, 98], "Table 1")))
    (tmp_path / "b.json").write_text(json.dumps(rows([20, 45, 50, 55, 58], [24, 50, 55, 64, 62], "Table 1, LSTM")))
    card = tmp_path / "card.yaml"  # the 4th instance is not in the result files: the paper's comes from the card
    card.write_text("results:\n  - {variant: b, metric: test/acc_inst4, value: 61, source: x}\n")
    series = series_from_results([("a", "MANN ours"), ("b", "LSTM ours")], tmp_path, card)
    assert [(label, dashed) for label, _, dashed in series] == [
        ("MANN ours", False), ("LSTM ours", False), ("MANN, paper (Table 1)", True), ("LSTM, paper (Table 1)", True)]
    assert series[3][1] == {1: 24, 2: 50, 3: 55, 4: 61, 5: 64, 10: 62}  # the paper's, not ours
    assert 4 not in series[1][1]  # our 4th instance was not logged: left out, not invented
    out = draw_curves(series, tmp_path / "curves.png")
    image, frame = Image.open(out).convert("RGB"), Frame()
    assert image.size == (frame.width, frame.height) and not list(tmp_path.glob(".*.tmp"))
    for (label, points, _), color in zip(series[:2], COLORS):  # a dot of the series' colour at each point
        for inst, acc in points.items():
            assert image.getpixel(frame.pixel(inst, acc)) == color, (label, inst)
    assert frame.pixel(1, 0)[1] > frame.pixel(1, 100)[1] and frame.pixel(10, 50)[0] > frame.pixel(1, 50)[0]
    with pytest.raises(SystemExit, match="c.json"):
        series_from_results([("c", "missing")], tmp_path)


def test_instance_counts_and_interval_over_episodes_by_hand():
    import math

    from lit_papers.metrics.fewshot import moments_ci95
    from lit_papers.papers.mann.module import MANNLitModule

    module = MANNLitModule(model=torch.nn.Linear(1, 1), optimizer=torch.optim.SGD, max_instance=2)
    labels = torch.tensor([[0, 1, 0, 1], [1, 1, 0, 0]])
    preds = torch.tensor([[0, 0, 0, 1], [1, 0, 1, 0]])
    logits = torch.nn.functional.one_hot(preds, 2).float()  # argmax = preds
    counts = module._instance_counts(logits, labels)
    # episode 1: inst1 1/2, inst2 2/2; episode 2: inst1 1/2, inst2 1/2
    expected = torch.tensor([[2, 3], [4, 4], [2, 2], [1.0, 1.5], [0.5, 1.25]], dtype=torch.float64)
    assert torch.equal(counts, expected)
    mean, ci = moments_ci95(counts[2:5, 1])
    assert mean == 0.75 and math.isclose(ci, 1.959963984540054 * 0.25)  # sample var 0.125 over 2 episodes


@pytest.mark.parametrize("config", ["tiny_per_head", "tiny_alphabets"])
def test_tiny_variant_configs_train_and_every_parameter_gets_a_gradient(cli, tmp_path, config):
    """The tiny presets of new variants (the generic test in tests/test_configs.py only picks up tiny.yaml)."""
    import json

    out = tmp_path / "grads.json"
    cli("fit", "--config", f"configs/mann/{config}.yaml", "--wandb", "false", "--trainer.fast_dev_run", "true",
        "--trainer.callbacks+=tests.helpers.probes.CheckAllGradients", f"--trainer.callbacks.out={out}")
    grads = json.loads(out.read_text())
    assert grads["total"] > 0 and grads["missing"] == [], grads["missing"][:10]


@pytest.mark.parametrize("net", ["mann", "lstm"])
@pytest.mark.parametrize("suffix, episodes", [("cpu", 100_000), ("25k", 400_000)])
def test_cpu_schedule_configs_differ_from_the_paper_configs_only_in_steps(net, suffix, episodes):
    """omniglot_<net>_cpu.yaml is the paper's recipe read as 100,000 episodes (6,250 batches of 16): the model, data,
    optimiser and augmentation must be those of omniglot_<net>.yaml, or the card's 'scaled' rows compare something else."""
    import yaml

    root = Path(__file__).resolve().parents[2] / "configs" / "mann"
    paper = yaml.safe_load((root / f"omniglot_{net}.yaml").read_text())
    cpu = yaml.safe_load((root / f"omniglot_{net}_{suffix}.yaml").read_text())
    assert cpu["trainer"].pop("max_steps") * cpu["data"]["init_args"]["episodes_per_batch"] == episodes
    paper["trainer"].pop("max_steps")
    assert cpu["trainer"] == paper["trainer"]
    for key in ("seed_everything", "model", "data"):
        assert cpu[key] == paper[key], key
