"""Steps-to-the-no-BN-best ratio and the curves picture (lit_papers/papers/batch_norm/{steps,curves}.py) on
hand-made Lightning CSV logs; the expected numbers are computed by hand in the comments."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from lit_papers.papers.batch_norm import curves, steps

HEADER = "epoch,lr-SGD,step,test/acc,train/acc,train/loss,val/acc,val/acc_n,val/loss"


def _rows(points):
    """Lightning's layout: a training row (val/acc empty) before each validation row, both with step = k - 1."""
    lines = [HEADER]
    for step, acc in points:
        lines.append(f"0,,{step},,0.3,2.0,,,")
        lines.append(f"0,,{step},,,,{acc},500.0,1.5")
    return "\n".join(lines) + "\n"


def _run(root, arm, version, seed, text):
    folder = root / "batch_norm" / arm / version
    (folder / "csv").mkdir(parents=True)
    (folder / "csv" / "metrics.csv").write_text(text)
    (folder / "config.yaml").write_text(f"seed_everything: {seed}\ntrainer: {{max_steps: 800}}\n")
    return folder


@pytest.fixture
def root(tmp_path):
    # csv step 199/399/599/799 = 200/400/600/800 optimizer steps done
    s = (199, 399, 599, 799)
    _run(tmp_path, "no_bn", "v0", 0, _rows(zip(s, (0.3, 0.5, 0.6, 0.55))))  # best 0.6, first at 600
    _run(tmp_path, "no_bn", "v1", 1, _rows(zip(s, (0.2, 0.4, 0.5, 0.5))))  # best 0.5, first at 600
    _run(tmp_path, "bn", "v0", 0, _rows(zip(s, (0.4, 0.62, 0.7, 0.71))))  # >= 0.6 at 400: ratio 600/400 = 1.5
    _run(tmp_path, "bn", "v1", 1, _rows(zip(s, (0.5, 0.6, 0.7, 0.7))))  # >= 0.5 at 200: ratio 600/200 = 3.0
    _run(tmp_path, "bn_x30", "v0", 0, _rows(zip(s, (0.1, 0.3, 0.59, 0.58))))  # never reaches 0.6
    _run(tmp_path, "bn_x30", "v1", 1, _rows(zip(s, (0.1, 0.2, 0.3, 0.5))))  # 0.5 at 800: ratio 0.75
    return tmp_path


def test_hand_computed_ratios(root):
    results = {r.arm: r for r in steps.compare(steps.find_runs(root, log=lambda m: None))}
    assert list(results) == ["no_bn", "bn", "bn_x30"]
    ref = results["no_bn"]
    assert [(s.seed, s.target, s.steps, s.ratio) for s in ref.seeds] == [("0", 0.6, 600, 1.0), ("1", 0.5, 600, 1.0)]
    bn = results["bn"]
    assert [(s.steps, s.ratio) for s in bn.seeds] == [(400, 1.5), (200, 3.0)]
    mean, std = bn.ratio
    assert mean == pytest.approx(2.25)
    assert std == pytest.approx(0.75 * math.sqrt(2))  # sample std of (1.5, 3.0): sqrt(2 * 0.75^2 / 1)
    assert bn.steps == (pytest.approx(300.0), pytest.approx(100 * math.sqrt(2)))
    assert bn.n == 2


def test_never_reached_arm(root):
    x30 = {r.arm: r for r in steps.compare(steps.find_runs(root, log=lambda m: None))}["bn_x30"]
    assert [(s.seed, s.steps, s.ratio) for s in x30.seeds] == [("0", None, None), ("1", 800, 0.75)]
    assert x30.n == 1 and x30.ratio == (0.75, None)  # one seed reached it: no std
    row = next(line for line in steps.table([x30]).splitlines() if line.startswith("| bn_x30"))
    assert "0.75" in row and "1 of 2" in row and "0: never" in row


def test_resumed_run_duplicate_rows(tmp_path):
    # first attempt logged 200, 400, 600 (0.9 at 600, then crashed before its checkpoint at 600); the resumed
    # attempt (from the checkpoint at 400) logs 400 again, then 600 and 800: the replayed rows win
    text = _rows([(199, 0.3), (399, 0.5), (599, 0.9)]) + _rows([(399, 0.5), (599, 0.6), (799, 0.55)]).split("\n", 1)[1]
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    assert steps.read_curve(path) == [(200, 0.3), (400, 0.5), (600, 0.6), (800, 0.55)]
    assert steps.first_step_reaching(steps.read_curve(path), 0.6) == 600  # the crashed attempt's 0.9 is gone


def test_bad_logs_name_the_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss\n0,0,2.3\n")
    with pytest.raises(steps.CurveError, match=r"metrics\.csv: no column 'val/acc'"):
        steps.read_curve(path)
    path.write_text("step,val/acc\n199,nan\n")
    with pytest.raises(steps.CurveError, match=r"metrics\.csv:2: val/acc is nan"):
        steps.read_curve(path)


def test_same_seed_twice_is_an_error(root):
    _run(root, "bn", "v7", 0, _rows([(199, 0.9)]))
    with pytest.raises(steps.CurveError, match="two runs of arm 'bn' with seed 0"):
        steps.compare(steps.find_runs(root, log=lambda m: None))


def test_command_json_and_plot(root, capsys):
    out = root / "curves.png"
    assert steps.main([str(root), "--json", "--plot", str(out)]) == 0
    data = {r["arm"]: r for r in json.loads(capsys.readouterr().out)}
    assert data["bn"]["ratio_mean"] == pytest.approx(2.25) and data["bn"]["n"] == 2
    assert data["bn_x30"]["per_seed"][0]["steps"] is None
    assert Image.open(out).size == (curves.Frame(x_max=800).width, curves.Frame(x_max=800).height)


def test_mean_curves_over_common_steps(root):
    runs = steps.find_runs(root, log=lambda m: None)
    means = curves.mean_curves(runs)
    assert means["bn"] == [(200, pytest.approx(0.45)), (400, pytest.approx(0.61)), (600, pytest.approx(0.7)),
                           (800, pytest.approx(0.705))]


def test_picture_colours_at_known_points(tmp_path):
    series = {"flat": [(0, 0.5), (1000, 0.5)], "rising": [(0, 0.0), (1000, 1.0)]}
    frame = curves.Frame(x_max=1000)
    path = curves.draw_curves(series, tmp_path / "c.png", hline=(0.9, "ref"), frame=frame)
    image = Image.open(path).convert("RGB")
    assert image.getpixel(frame.pixel(700, 0.5)) == curves.COLORS[0]  # on the flat line
    assert image.getpixel(frame.pixel(300, 0.3)) == curves.COLORS[1]  # on the diagonal (x = y)
    assert image.getpixel(frame.pixel(700, 0.3)) == (255, 255, 255)  # between the lines: background
    assert image.getpixel(frame.pixel(3, 0.9)) == curves.GREY  # the dashed reference line's first dash


def _finish(folder, seed, acc):
    """A finished run's card_result.json: its test/acc row (card units: percent) and evidence."""
    (folder / "card_result.json").write_text(json.dumps([{
        "metric": "test/acc", "ours": acc * 100,
        "evidence": {"config": [f"configs/batch_norm/{folder.parent.name}.yaml"], "seed": seed, "git_commit": "abc",
                     "wall_time_s": 100.0, "fit_time_s": 90.0, "run_dir": str(folder)}}]))


@pytest.fixture
def cpu_root(tmp_path):
    s = (99, 199, 299, 399)  # 100..400 optimizer steps
    # a full-size no_bn run with another best: the _cpu arms must not see it
    _run(tmp_path, "no_bn", "v0", 0, _rows(zip(s, (0.1, 0.2, 0.3, 0.9))))
    for seed, ref, arm in ((0, (0.3, 0.5, 0.6, 0.6), (0.5, 0.6, 0.7, 0.7)),    # target 0.6 at 300; bn 200: 1.5
                           (1, (0.2, 0.4, 0.5, 0.5), (0.5, 0.5, 0.6, 0.6)),    # target 0.5 at 300; bn 100: 3.0
                           (2, (0.2, 0.3, 0.3, 0.4), (0.2, 0.4, 0.4, 0.4))):   # target 0.4 at 400; bn 200: 2.0
        _finish(_run(tmp_path, "no_bn_cpu", f"seed{seed}", seed, _rows(zip(s, ref))), seed, ref[-1])
        _finish(_run(tmp_path, "bn_cpu", f"seed{seed}", seed, _rows(zip(s, arm))), seed, arm[-1])
    return tmp_path


def test_suffix_reads_only_the_cpu_arms(cpu_root, capsys):
    assert steps.main([str(cpu_root), "--suffix", "_cpu", "--json"]) == 0
    data = {r["arm"]: r for r in json.loads(capsys.readouterr().out)}
    assert list(data) == ["no_bn_cpu", "bn_cpu"]
    assert [s["ratio"] for s in data["bn_cpu"]["per_seed"]] == [1.5, 3.0, 2.0]


def test_card_results_by_hand(cpu_root, capsys):
    out = cpu_root / "results"
    assert steps.main([str(cpu_root), "--suffix", "_cpu", "--results", str(out)]) == 0
    bn = {r["metric"]: r for r in json.loads((out / "bn_cpu.json").read_text())}
    speed = bn["speedup_vs_no_bn"]
    # ratios 1.5, 3.0, 2.0: mean 6.5/3, sample std sqrt(((1.5-m)^2 + (3-m)^2 + (2-m)^2) / 2) = 0.763763...,
    # t(0.975, 2) = 4.302653 -> half-width 4.302653 * 0.763763 / sqrt(3) = 1.897292
    assert speed["ours"] == pytest.approx(6.5 / 3, abs=1e-6)
    assert speed["ci95"] == pytest.approx(1.897292, abs=1e-5) and speed["n"] == 3 and speed["n_unit"] == "seeds"
    assert speed["paper_value"] == pytest.approx(2.33)
    acc = bn["test/acc"]  # final val-curve values used as test accuracies: 70, 60, 40 percent
    assert acc["ours"] == pytest.approx(170 / 3, abs=1e-5)
    assert acc["ci95"] == pytest.approx(4.302653 * 15.275252 / math.sqrt(3), abs=1e-3)  # std of (70, 60, 40)
    assert acc["evidence"]["seed"] == [0, 1, 2] and acc["evidence"]["wall_time_s"] == 300.0
    assert json.loads((out / "no_bn_cpu.json").read_text())[0]["ours"] == pytest.approx(1.0)
    assert not (out / "no_bn.json").exists()


def test_card_results_need_finished_runs(cpu_root, capsys):
    (cpu_root / "batch_norm" / "bn_cpu" / "seed1" / "card_result.json").unlink()
    assert steps.main([str(cpu_root), "--suffix", "_cpu", "--results", str(cpu_root / "results")]) == 1
    err = capsys.readouterr().err
    assert "bn_cpu/seed1" in err and "has not finished its test" in err


def test_finished_only_skips_runs_still_going(cpu_root, capsys):
    for folder in (cpu_root / "batch_norm").glob("*/*"):
        (folder / "FINISHED").touch()
    (cpu_root / "batch_norm" / "bn_cpu" / "seed1" / "FINISHED").unlink()  # still going
    out = cpu_root / "results"
    assert steps.main([str(cpu_root), "--suffix", "_cpu", "--finished", "--results", str(out)]) == 0
    assert "skipped 1 folder(s) without csv/metrics.csv or not finished" in capsys.readouterr().err
    speed = {r["metric"]: r for r in json.loads((out / "bn_cpu.json").read_text())}["speedup_vs_no_bn"]
    assert speed["n"] == 2 and speed["ours"] == pytest.approx((1.5 + 2.0) / 2)  # seeds 0 and 2
