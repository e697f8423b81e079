"""``lit-papers report``: the reproduction tables, built from the cards and the committed results only.

Sources: every ``lit_papers/papers/<paper>/card.yaml`` (the paper's numbers, each row with its ``kind``) and the
results committed next to it in ``results/*.json`` (``card_result.json`` files from runs). Every number, interval
and piece of evidence (hardware, versions, data size, steps, wall time, commit) is read from those files; the
verdict of a row is recomputed from its card row and the stored value/interval (see
:func:`lit_papers.callbacks.card.verdict`), so a card edit shows without re-running anything.

    lit-papers report                 print every paper's full table
    lit-papers report --write         regenerate README.md (one headline row per paper) and each paper's
                                      README table (between the paper-table markers)
    lit-papers report --check         exit 1 naming each README table or summary picture that is stale
    lit-papers report --plot          write results/summary.png in each paper folder with results
    lit-papers report --json          one JSON list of all rows
    lit-papers report --add RUN_DIR/card_result.json   keep a run's result under its paper's results/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from lit_papers.callbacks.card import KINDS, ablation_verdict, interval, is_binomial, load_card, verdict

PAPERS_DIR = Path(__file__).resolve().parents[1] / "papers"
START, END = "<!-- paper-table:start -->", "<!-- paper-table:end -->"
SUMMARY_PNG = "summary.png"
PASS = {"pass": True, "fail": False, "discrepancy": False}  # `pass` of a row; None: no verdict (yet)
STATUS_WORDS = {"pass": "✅", "fail": "❌", "open": "❔ open", "discrepancy": "⚠️ discrepancy",
                "context": "scaled (context)", "none": "not compared"}


def _repo(papers_dir: Path) -> Path:
    return papers_dir.parent.parent


def _load_results(folder: Path, repo: Path) -> list[dict]:
    results = []
    for path in sorted(folder.glob("*.json")):
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}: not valid JSON ({exc}); fix or delete it") from exc
        for i, record in enumerate(loaded if isinstance(loaded, list) else [loaded]):
            for key in ("variant", "metric", "ours"):
                if key not in record:
                    raise SystemExit(f"{path}: row {i} lacks {key!r}; a result row is a card_result.json row")
            results.append({**record, "result_file": path.relative_to(repo).as_posix()})
    return results


def _row(paper_key: str, card: dict, row: dict, match: dict | None) -> dict:
    scale = float(row.get("scale", 1.0))
    out = {
        "paper": paper_key, "title": card.get("paper", paper_key), "variant": row["variant"],
        "config": f"configs/{paper_key}/{row['variant']}.yaml", "metric": row["metric"],
        "kind": row["kind"], "card_kind": row["kind"], "group": row.get("group"),
        "baseline": bool(row.get("baseline")), "headline": bool(row.get("headline")),
        "paper_value": float(row["value"]), "source": row["source"], "tolerance": float(row.get("tolerance", 0.0)),
        "higher_is_better": bool(row.get("higher_is_better", True)), "note": row.get("note"),
        "ours": None, "ci95": None, "n": None, "n_unit": None, "low": None, "high": None, "interval": None,
        "delta": None, "status": "none", "pass": None, "verdict": "not run yet", "evidence": None, "result_file": None,
        "backfilled": None, "overridden": None, "card_row": row,
    }
    if match is None:
        return out
    ours = float(match["ours"])
    ci95 = match.get("ci95")
    found = interval(ours, scale=scale, ci95=ci95, n=match.get("n"), n_unit=match.get("n_unit"),
                     binomial=is_binomial(row))
    overridden = match.get("overridden") or (match.get("evidence") or {}).get("data_overrides") or None
    out.update({
        "ours": ours, "ci95": ci95, "n": match.get("n"), "n_unit": match.get("n_unit"),
        "low": found[0] if found else None, "high": found[1] if found else None, "interval": found[2] if found else None,
        "delta": ours - out["paper_value"], "evidence": match.get("evidence") or {},
        "result_file": match["result_file"], "backfilled": match.get("backfilled"), "overridden": overridden,
    })
    if overridden:
        out["kind"] = "variant"
        out["note"] = match.get("note") or out["note"]
    out["status"], out["verdict"] = verdict(row, ours, out["low"], out["high"], kind=out["kind"])
    out["pass"] = PASS.get(out["status"])
    return out


def collect(papers_dir: Path = PAPERS_DIR) -> list[dict]:
    """Every card row of every paper, with each kept result for it (a row without a result: "not run yet")."""
    repo = _repo(papers_dir)
    rows = []
    for card_path in sorted(papers_dir.glob("*/card.yaml")):
        paper_key = card_path.parent.name
        card = load_card(card_path)
        results = _load_results(card_path.parent / "results", repo)
        paper_rows = []
        for row in card.get("results", []):
            # One measurement per run: a result file repeats a (variant, metric) once per card row that names it
            # (e.g. one arm in several ablation groups); each card row gets each distinct measurement once.
            matches, measured = [], set()
            for r in results:
                if r.get("variant") == row["variant"] and r.get("metric") == row["metric"]:
                    key = (r.get("ours"), (r.get("evidence") or {}).get("run_dir"), r.get("result_file"))
                    if key not in measured:
                        measured.add(key)
                        matches.append(r)
            for match in matches or [None]:
                paper_rows.append(_row(paper_key, card, row, match))
        _ablations(paper_rows)
        if paper_rows and not any(r["headline"] for r in paper_rows):  # default: the first paper row, else the first
            first = next((r for r in paper_rows if r["card_kind"] == "paper"), paper_rows[0])
            for r in paper_rows:
                r["headline"] = r["variant"] == first["variant"] and r["metric"] == first["metric"]
        rows += paper_rows
    return rows


def _ablations(rows: list[dict]) -> None:
    """Ablation verdicts need the other arms: each arm against the others of its (group, metric)."""
    arms = [r for r in rows if r["kind"] == "ablation"]
    for arm in arms:
        others = [o for o in arms if o is not arm and o["group"] == arm["group"] and o["metric"] == arm["metric"]
                  and o["variant"] != arm["variant"]]
        if arm["ours"] is None:
            continue
        arm["status"], arm["verdict"] = ablation_verdict(
            {"row": arm["card_row"], "ours": arm["ours"], "low": arm["low"], "high": arm["high"]},
            [{"row": o["card_row"], "ours": o["ours"], "low": o["low"], "high": o["high"]} for o in others])
        arm["pass"] = PASS.get(arm["status"])


# -- formatting ----------------------------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def ours_text(r: dict) -> str:
    """``91.00 ± 2.80`` (a symmetric logged interval), ``91.00 [87.8, 93.5]`` (Wilson), ``91.00 ± ?``."""
    if r["ours"] is None:
        return "—"
    if r["interval"] == "logged":
        return f"{r['ours']:.4g} ± {r['ci95']:.2g}"
    if r["interval"] == "wilson":
        return f"{r['ours']:.4g} [{r['low']:.4g}, {r['high']:.4g}]"
    return f"{r['ours']:.4g} ± ?"


def n_text(r: dict) -> str:
    if r["n"] is None:
        return "?" if r["ours"] is not None else ""
    unit = f" {r['n_unit']}" if r.get("n_unit") else ""
    mark = "*" if r.get("backfilled") else ""
    return f"{r['n']}{unit}{mark}"


def evidence_text(r: dict, local_links: bool = False) -> str:
    ev = r["evidence"]
    if ev is None:
        return ""
    hw = ev.get("hardware") or {}
    device = ", ".join(hw.get("gpus") or []) or f"{hw.get('cpu_count', '?')}-core CPU"
    fit = ev.get("fit_time_s")
    steps = ev.get("global_step")
    attempts = ev.get("attempts")
    took = f"{steps} steps" + (f", fit {_duration(fit)}" if fit else "")
    if attempts and len(attempts) > 1:
        took += f" in {len(attempts)} attempts"
    if ev.get("wall_time_s") is not None:
        took += f", run wall {_duration(ev['wall_time_s'])}"
    parts = [f"seed {ev.get('seed')}", device, took]
    commits = list(dict.fromkeys(a.get("commit") or "?" for a in attempts or []))
    if len(commits) > 1 or any(c.endswith("-dirty") for c in commits):  # what trained the steps, not only the last
        parts.append("**⚠️ trained by** " + ", ".join(f"`{c[:10]}{'-dirty' if c.endswith('-dirty') else ''}`"
                                                    for c in commits))
    if ev.get("train_items") is not None:
        parts.append(f"{ev['train_items']} training {ev.get('train_items_unit') or 'items'}")
    found = ev.get("versions") or {}
    if found.get("torch"):
        parts.append(" ".join(f"{k} {found[k]}" for k in ("torch", "lightning") if found.get(k)))
    commit = ev.get("git_commit")
    several = sorted({c for c in (ev.get("git_commits") or {}).values() if c})  # an aggregate over runs
    if commit and len(several) > 1 and not commit.endswith("-dirty"):
        parts.append("runs of " + ", ".join(f"`{c[:10]}`" for c in several) + " (the same code for the numbers)")
    elif commit:
        parts.append(f"**⚠️ dirty tree** `{commit[:10]}`" if commit.endswith("-dirty") else f"`{commit[:10]}`")
    else:
        parts.append("no commit recorded")
    if r.get("overridden"):
        parts.append("data overridden: " + ", ".join(f"`{k}`" for k in r["overridden"]))
    link = r["result_file"].split(f"papers/{r['paper']}/", 1)[-1] if local_links else r["result_file"]
    parts.append(f"[json]({link})")
    return ", ".join(parts)


def markdown(rows: list[dict], local_links: bool = False) -> str:
    """The full table of one or more papers' rows (``local_links``: result links relative to the paper folder)."""
    lines = ["| config | metric | kind | paper | ours (95% interval) | n | Δ | verdict | evidence |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kind = r["kind"] + (f" ({r['group']})" if r["group"] else "") + (", baseline" if r["baseline"] else "")
        if r["kind"] != r["card_kind"]:
            kind += f" (card: {r['card_kind']})"
        delta = "" if r["delta"] is None or r["kind"] == "variant" else f"{r['delta']:+.3g}"
        lines.append(f"| `{r['config']}` | {r['metric']} | {kind} | {r['paper_value']:g} ({_cell(r['source'])}) | "
                     f"{ours_text(r)} | {n_text(r)} | {delta} | {_cell(r['verdict'])} | {evidence_text(r, local_links)} |")
    return "\n".join(lines)


def legend(rows: list[dict]) -> str:
    text = ("Kinds: " + "; ".join(f"**{k}**: {v}" for k, v in KINDS.items()) + ". A `baseline` row whose interval is "
            "past the paper's own baseline beyond tolerance is a discrepancy, not a success. Intervals: `± h` is a "
            "logged 95% half-width, `[low, high]` a Wilson interval from n (binomial accuracy), `± ?` means no "
            "interval could be computed from what the result file holds.")
    if any(r.get("backfilled") for r in rows):
        text += " `n*`: the count was back-filled into the result file from its config (see the JSON's `backfilled`)."
    return text


def headline_markdown(rows: list[dict]) -> str:
    """The top-level README table: one row per paper (its headline card row) and a count of its other rows."""
    lines = ["| paper | main claim (paper) | ours (95% interval) | verdict | all rows |", "|---|---|---|---|---|"]
    for paper in sorted({r["paper"] for r in rows}):
        paper_rows = [r for r in rows if r["paper"] == paper]
        heads = [r for r in paper_rows if r["headline"]]
        head = next((r for r in heads if r["ours"] is not None), heads[0])
        run = [r for r in paper_rows if r["ours"] is not None]
        counts = {}
        for r in run:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        summary = f"{len(run)} of {len(paper_rows)} rows run"
        if counts:
            summary += ": " + ", ".join(f"{counts[k]} {word}" for k, word in STATUS_WORDS.items() if k in counts)
        dirty = " (⚠️ dirty tree)" if (head["evidence"] or {}).get("git_commit", "").endswith("-dirty") else ""
        claim = f"`{head['variant']}` {head['metric']} {head['paper_value']:g} ({_cell(head['source'])}; {head['kind']})"
        lines.append(f"| [{paper}](lit_papers/papers/{paper}/README.md) | {claim} | {ours_text(head)} | "
                     f"{_cell(head['verdict'])}{dirty} | {summary} |")
    return "\n".join(lines)


# -- READMEs -------------------------------------------------------------------------------------------------------
def _replace_block(text: str, block: str, where: Path) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{where}: markers {START} / {END} not found; add them where the table belongs")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def paper_block(rows: list[dict], paper_dir: Path) -> str:
    parts = ["Generated by `lit-papers report --write` from `card.yaml` and `results/*.json`; do not edit by hand.",
             "", markdown(rows, local_links=True), "", legend(rows)]
    if (paper_dir / "results" / SUMMARY_PNG).is_file():
        parts += ["", f"![ours vs the paper, with 95% intervals](results/{SUMMARY_PNG})"]
    return "\n".join(parts)


def paper_readme_text(text: str, block: str, where: Path) -> str:
    """The paper README with its generated table: between the markers, or (first time) right under the
    ``## Results`` heading, or in a new section at the end."""
    if START not in text:
        lines = text.splitlines(keepends=True)
        at = next((i for i, line in enumerate(lines) if line.strip().lower() == "## results"), None)
        markers = f"{START}\n{END}\n"
        if at is None:
            text = text.rstrip("\n") + f"\n\n## Results\n\n{markers}"
        else:
            text = "".join(lines[: at + 1]) + "\n" + markers + "".join(lines[at + 1:])
    return _replace_block(text, block, where)


def expected_readmes(rows: list[dict], papers_dir: Path = PAPERS_DIR) -> dict[Path, str]:
    """Every README this command generates -> its full expected text."""
    repo = _repo(papers_dir)
    out = {}
    top = repo / "README.md"
    if top.is_file():
        out[top] = _replace_block(top.read_text(), headline_markdown(rows), top)
    for paper in sorted({r["paper"] for r in rows}):
        readme = papers_dir / paper / "README.md"
        if readme.is_file():
            out[readme] = paper_readme_text(readme.read_text(), paper_block([r for r in rows if r["paper"] == paper],
                                                                            papers_dir / paper), readme)
    return out


def write_readme(path: Path, table: str) -> None:
    """Replace the block between the markers of ``path`` with ``table`` (atomically)."""
    _atomic_write(path, _replace_block(path.read_text(), table, path))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def stale(rows: list[dict], papers_dir: Path = PAPERS_DIR) -> list[Path]:
    """READMEs whose generated block differs from what the cards and results give, and summary pictures that
    are missing or were drawn from other numbers (the digest in the PNG)."""
    from lit_papers.launch.summary_plot import digest, stored_digest

    old = [path for path, text in expected_readmes(rows, papers_dir).items() if path.read_text() != text]
    for paper in sorted({r["paper"] for r in rows if r["ours"] is not None}):
        picture = papers_dir / paper / "results" / SUMMARY_PNG
        if stored_digest(picture) != digest([r for r in rows if r["paper"] == paper]):
            old.append(picture)
    return old


def add_result(result_file: Path, papers_dir: Path = PAPERS_DIR) -> Path:
    records = json.loads(result_file.read_text())
    if not records:
        raise SystemExit(f"{result_file}: no rows")
    paper, variant = records[0]["paper_key"], records[0]["variant"]
    target = papers_dir / paper / "results" / f"{variant}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result_file, target)
    return target


def main(argv: list[str] | None = None, papers_dir: Path = PAPERS_DIR) -> int:
    parser = argparse.ArgumentParser(prog="lit-papers report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print all rows as one JSON list")
    parser.add_argument("--write", nargs="?", const="all", metavar="README",
                        help="regenerate the tables of README.md and every paper README (a path: that README only)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated README table is stale")
    parser.add_argument("--plot", action="store_true", help="write results/summary.png in each paper folder")
    parser.add_argument("--add", type=Path, metavar="CARD_RESULT", help="keep a run's card_result.json")
    args = parser.parse_args(argv)
    if args.add:
        print(f"kept {add_result(args.add, papers_dir)}")
        return 0
    rows = collect(papers_dir)
    if args.json:
        skip = {"card_row"}
        json.dump([{k: v for k, v in r.items() if k not in skip} for r in rows], sys.stdout, indent=2)
        print()
        return 0
    if args.plot:
        from lit_papers.launch.summary_plot import write_summary

        for paper in sorted({r["paper"] for r in rows if r["ours"] is not None}):
            path = write_summary([r for r in rows if r["paper"] == paper], papers_dir / paper / "results" / SUMMARY_PNG)
            print(f"wrote {path}")
    if args.check:
        old = stale(rows, papers_dir)
        for path in old:
            fix = "--plot --write" if path.suffix == ".png" else "--write"
            print(f"stale: {path} (cards or results changed; run `lit-papers report {fix}`)", file=sys.stderr)
        return 1 if old else 0
    if args.write:
        expected = expected_readmes(rows, papers_dir)
        if args.write != "all":
            wanted = Path(args.write).resolve()
            expected = {p: t for p, t in expected.items() if p.resolve() == wanted}
            if not expected:
                raise SystemExit(f"{args.write}: not a README this command generates (README.md or a paper's)")
        for path, text in expected.items():
            if path.read_text() != text:
                _atomic_write(path, text)
                print(f"updated {path}")
        return 0
    if not args.plot:
        for paper in sorted({r["paper"] for r in rows}):
            print(f"## {paper}\n\n{markdown([r for r in rows if r['paper'] == paper])}\n")
    return 0
