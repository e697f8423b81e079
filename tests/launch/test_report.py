"""``lit-papers report``: tables from cards and kept results, headline README, --write/--check, --plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lit_papers.callbacks.card import wilson
from lit_papers.launch import report
from lit_papers.launch.summary_plot import KIND_COLORS, draw_summary

REPO = Path(__file__).resolve().parents[2]


def _evidence(**extra):
    return {"seed": 0, "hardware": {"cpu_count": 2, "gpus": ["NVIDIA H200"]}, "wall_time_s": 3.0, "fit_time_s": 600.0,
            "global_step": 500, "git_commit": "0123456789abcdef", "versions": {"torch": "2.15.0"}, **extra}


def _toy(tmp_path: Path) -> Path:
    papers = tmp_path / "lit_papers" / "papers"
    (papers / "toy" / "results").mkdir(parents=True)
    (papers / "toy" / "card.yaml").write_text(yaml.safe_dump({"paper": "Toy", "results": [
        {"variant": "a", "metric": "test/acc", "kind": "paper", "value": 90.0, "scale": 100, "source": "T1",
         "tolerance": 0.5, "headline": True},
        {"variant": "b", "metric": "test/acc", "kind": "scaled", "value": 80.0, "scale": 100, "source": "T1",
         "baseline": True, "tolerance": 1.0},
        {"variant": "c", "metric": "test/acc", "kind": "target", "value": 90.0, "scale": 100, "source": "issue"},
        {"variant": "d", "metric": "test/acc", "kind": "paper", "value": 70.0, "scale": 100, "source": "T2"}]}))
    kept = {
        "a": [{"paper_key": "toy", "variant": "a", "metric": "test/acc", "ours": 89.8, "ci95": 0.4, "n": 1000,
               "evidence": _evidence()}],
        "b": [{"paper_key": "toy", "variant": "b", "metric": "test/acc", "ours": 88.0, "n": 500,
               "evidence": _evidence(git_commit="fedcba9876543210-dirty")}],
        "c": [{"paper_key": "toy", "variant": "c", "metric": "test/acc", "ours": 91.0, "n": 400, "n_unit": "queries",
               "backfilled": {"n": "from the config"}, "evidence": _evidence(train_items=544)},
              {"paper_key": "toy", "variant": "c", "metric": "test/acc", "ours": 99.0, "n": 400,
               "overridden": ["data.init_args.root"], "note": "other data", "evidence": _evidence()}],
    }
    for name, rows in kept.items():
        (papers / "toy" / "results" / f"{name}.json").write_text(json.dumps(rows))
    (papers / "toy" / "README.md").write_text("# Toy\n\n## Results\n\nprose stays\n")
    (tmp_path / "README.md").write_text(f"intro\n{report.START}\nold\n{report.END}\noutro\n")
    return papers


def test_rows_carry_kind_interval_and_verdict(tmp_path):
    rows = {(r["variant"], r["ours"]): r for r in report.collect(_toy(tmp_path))}
    a = rows[("a", 89.8)]  # paper: 89.8 +- 0.4 reaches 90 - 0.5
    assert (a["kind"], a["low"], a["high"], a["status"]) == ("paper", pytest.approx(89.4), pytest.approx(90.2), "pass")
    b = rows[("b", 88.0)]  # scaled baseline 8 points above the paper's baseline: Wilson on n = 500 stays above 81
    assert b["status"] == "discrepancy" and (b["low"], b["high"]) == pytest.approx([100 * x for x in wilson(0.88, 500)])
    c = rows[("c", 91.0)]  # the target 90 is inside [87.8, 93.4]
    assert c["status"] == "open" and c["interval"] == "wilson"
    over = rows[("c", 99.0)]  # a run with other data: a variant, whatever its card row says
    assert (over["kind"], over["card_kind"], over["status"]) == ("variant", "target", "none")
    assert rows[("d", None)]["verdict"] == "not run yet"

    table = report.markdown(list(rows.values()))
    line = {r: next(x for x in table.splitlines() if f"configs/toy/{r}.yaml" in x and text in x)
            for r, text in [("a", "89.8"), ("b", "88"), ("c", "91"), ("o", "99")] if r != "o"}
    assert "89.8 ± 0.4" in line["a"] and "✅" in line["a"] and "NVIDIA H200" in line["a"] and "`0123456789`" in line["a"]
    assert "discrepancy" in line["b"] and "✅" not in line["b"] and "dirty tree" in line["b"]
    assert "[87.79, 93.43]" in line["c"] and "400 queries*" in line["c"] and "544 training items" in line["c"]
    over_line = next(x for x in table.splitlines() if "99 [" in x)
    assert "variant (card: target)" in over_line and "`data.init_args.root`" in over_line and "✅" not in over_line


def test_write_then_check_and_a_stale_result_fails_check(tmp_path, capsys):
    papers = _toy(tmp_path)
    assert report.main(["--check"], papers_dir=papers) == 1  # never written: both READMEs are stale
    assert report.main(["--write"], papers_dir=papers) == 0
    capsys.readouterr()
    assert report.main(["--check"], papers_dir=papers) == 1  # the picture is missing
    assert "summary.png" in capsys.readouterr().err
    assert report.main(["--plot", "--write"], papers_dir=papers) == 0
    top = (tmp_path / "README.md").read_text()
    assert top.startswith("intro") and top.endswith("outro\n") and "old" not in top
    assert top.count("lit_papers/papers/toy/README.md") == 1  # one headline row per paper
    assert "`a` test/acc 90" in top and "89.8 ± 0.4" in top and "4 of 5 rows run: 1 ✅, 1 ❔ open, 1 ⚠️ discrepancy, 1 not compared" in top
    paper = (papers / "toy" / "README.md").read_text()
    assert paper.index("## Results") < paper.index(report.START) < paper.index("prose stays")
    assert paper.count("configs/toy/") == 5 and "[json](results/a.json)" in paper
    capsys.readouterr()
    assert report.main(["--check"], papers_dir=papers) == 0
    assert report.main(["--write"], papers_dir=papers) == 0 and "updated" not in capsys.readouterr().out  # idempotent

    result = papers / "toy" / "results" / "a.json"
    rows = json.loads(result.read_text())
    rows[0]["ours"] = 85.0
    result.write_text(json.dumps(rows))
    assert report.main(["--check"], papers_dir=papers) == 1
    err = capsys.readouterr().err
    assert "toy/README.md" in err and f"{tmp_path / 'README.md'}" in err and "summary.png" in err


def test_the_repository_readmes_are_up_to_date():
    """`lit-papers report --check` on this repository: regenerate with `lit-papers report --write`."""
    assert report.main(["--check"]) == 0


def test_summary_bars_are_proportional_to_the_values(tmp_path):
    papers = _toy(tmp_path)
    rows = [r for r in report.collect(papers) if r["ours"] is not None]
    for r, value in zip(rows, (20.0, 40.0, 80.0, 60.0)):  # one panel (one metric), axis from 0
        r.update(ours=value, low=None, high=None)
    image, bars = draw_summary(rows)
    pixels = np.asarray(image.convert("RGB"))
    lengths = []
    for bar, r in zip(bars, rows):
        x0, y0, x1, y1 = bar["box"]
        line = pixels[y0 + 1]  # a row inside the bar, above the interval whisker
        color = KIND_COLORS[r["kind"]]
        xs = np.flatnonzero((line == color).all(axis=1))
        lengths.append(xs.max() - xs.min())  # pixels from the origin column to the end column
        assert bar["axis_low"] == 0 and abs(lengths[-1] - r["ours"] * bar["px_per_unit"]) <= 1
    assert np.allclose(np.array(lengths) / lengths[0], [1, 2, 4, 3], atol=0.02)
    # one bar per result row: count the coloured runs down a column just right of the axis origin
    column = pixels[:, bars[0]["origin"] + 2]
    coloured = np.isin(column.view([("", column.dtype)] * 3).ravel(),
                       np.array([tuple(c) for c in KIND_COLORS.values()], dtype=column.dtype).view(
                           [("", column.dtype)] * 3).ravel())
    assert np.count_nonzero(np.diff(coloured.astype(int)) == 1) == len(rows)

    out = report.main(["--plot", "--write"], papers_dir=papers)
    assert out == 0 and Image.open(papers / "toy" / "results" / "summary.png").size[0] > 0
    assert "](results/summary.png)" in (papers / "toy" / "README.md").read_text()


def test_ablation_arms_are_judged_together(tmp_path):
    papers = tmp_path / "lit_papers" / "papers"
    (papers / "abl" / "results").mkdir(parents=True)
    arm = {"metric": "test/error", "kind": "ablation", "group": "depth", "scale": 100, "source": "T6",
           "higher_is_better": False}
    (papers / "abl" / "card.yaml").write_text(yaml.safe_dump({"results": [
        {**arm, "variant": "deep", "value": 6.4}, {**arm, "variant": "shallow", "value": 8.8},
        {**arm, "variant": "other_group", "group": "width", "value": 7.0}]}))
    for name, ours, half in [("deep", 7.0, 0.3), ("shallow", 9.5, 0.3), ("other_group", 20.0, 0.3)]:
        (papers / "abl" / "results" / f"{name}.json").write_text(json.dumps(
            [{"variant": name, "metric": "test/error", "ours": ours, "ci95": half, "evidence": _evidence()}]))
    rows = {r["variant"]: r for r in report.collect(papers)}
    # the paper: deep is 2.4 points better; ours: 2.5 better, intervals apart -> both arms pass
    assert rows["deep"]["status"] == rows["shallow"]["status"] == "pass" and rows["deep"]["pass"] is True
    assert rows["other_group"]["status"] == "open"  # alone in its group: nothing to compare with
    (papers / "abl" / "results" / "shallow.json").write_text(json.dumps(
        [{"variant": "shallow", "metric": "test/error", "ours": 7.3, "ci95": 0.3, "evidence": _evidence()}]))
    assert {r["variant"]: r["status"] for r in report.collect(papers)}["deep"] == "fail"  # overlapping intervals


def test_an_arm_in_two_ablation_groups_is_one_measurement_in_each(tmp_path):
    # Mask R-CNN's shapes_c4_align is the RoIAlign arm of Table 2c and the sigmoid arm of Table 2b; its result file
    # repeats the measurement once per card row. Each group must get the arm once, with that group's label.
    papers = tmp_path / "lit_papers" / "papers"
    (papers / "abl" / "results").mkdir(parents=True)
    arm = {"metric": "test/ap", "kind": "ablation", "source": "T2"}
    (papers / "abl" / "card.yaml").write_text(yaml.safe_dump({"results": [
        {**arm, "variant": "pool", "group": "layer", "value": 26.9},
        {**arm, "variant": "align", "group": "layer", "value": 30.3},
        {**arm, "variant": "softmax", "group": "loss", "value": 24.8},
        {**arm, "variant": "align", "group": "loss", "value": 30.3}]}))
    record = {"variant": "align", "metric": "test/ap", "ours": 31.0, "ci95": 0.2, "evidence": _evidence()}
    (papers / "abl" / "results" / "align.json").write_text(json.dumps([record, record]))
    for name, ours in [("pool", 27.0), ("softmax", 25.0)]:
        (papers / "abl" / "results" / f"{name}.json").write_text(json.dumps(
            [{"variant": name, "metric": "test/ap", "ours": ours, "ci95": 0.2, "evidence": _evidence()}]))
    rows = report.collect(papers)
    assert [(r["variant"], r["group"]) for r in rows] == [("pool", "layer"), ("align", "layer"),
                                                          ("softmax", "loss"), ("align", "loss")]
    assert all(r["status"] == "pass" for r in rows)
