"""``lit-papers report``: gather the committed reproduction results into the README's paper table.

Sources: every ``lit_papers/papers/<paper>/card.yaml`` (the paper's numbers) and the results committed next to
it in ``results/*.json`` (``card_result.json`` files from runs). Rows of a card without a result show "not run".

    lit-papers report                 print the Markdown table
    lit-papers report --write README.md   replace the table between the README's markers
    lit-papers report --json          one JSON list: paper, variant, metric, paper value, ours, delta, pass, evidence
    lit-papers report --add RUN_DIR/card_result.json   keep a run's result under its paper's results/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from lit_papers.callbacks.card import load_card

PAPERS_DIR = Path(__file__).resolve().parents[1] / "papers"
START, END = "<!-- paper-table:start -->", "<!-- paper-table:end -->"


def collect(papers_dir: Path = PAPERS_DIR) -> list[dict]:
    rows = []
    for card_path in sorted(papers_dir.glob("*/card.yaml")):
        paper_key = card_path.parent.name
        card = load_card(card_path)
        results = []
        for path in sorted((card_path.parent / "results").glob("*.json")):
            try:
                loaded = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}: not valid JSON ({exc}); fix or delete it") from exc
            for record in loaded if isinstance(loaded, list) else [loaded]:
                results.append({**record, "result_file": str(path.relative_to(papers_dir.parent.parent))})
        seen = set()
        for row in card.get("results", []):
            matches = [r for r in results if r.get("variant") == row["variant"] and r.get("metric") == row["metric"]]
            for match in matches or [None]:
                key = (row["variant"], row["metric"], match and match.get("result_file"))
                if key in seen:
                    continue
                seen.add(key)
                rows.append({
                    "paper": paper_key,
                    "title": card.get("paper", paper_key),
                    "variant": row["variant"],
                    "config": f"configs/{paper_key}/{row['variant']}.yaml",
                    "metric": row["metric"],
                    "paper_value": float(row["value"]),
                    "source": row["source"],
                    "ours": None if match is None else match["ours"],
                    "delta": None if match is None else match["delta"],
                    "pass": None if match is None else match["pass"],
                    "note": row.get("note"),
                    "evidence": None if match is None else {**match.get("evidence", {}), "result_file": match["result_file"]},
                })
    return rows


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| paper | config | metric | paper | ours | Δ | verdict | evidence |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ours"] is None:
            verdict, evidence = "not run yet", ""
        else:
            verdict = "✅ reached" if r["pass"] else f"❌ short by {abs(r['delta']):.2f}"
            ev = r["evidence"]
            hw = ev.get("hardware", {})
            device = ", ".join(hw.get("gpus", [])) or f"{hw.get('cpu_count', '?')}-core CPU"
            fit = ev.get("fit_time_s")
            took = f"{ev.get('global_step')} steps, fit {_duration(fit)}" if fit else f"{ev.get('wall_time_s', '?')} s"
            evidence = f"seed {ev.get('seed')}, {device}, {took}, [json]({ev['result_file']})"
        source = r["source"].replace("|", "/")
        delta = "" if r["delta"] is None else f"{r['delta']:+.2f}"
        lines.append(f"| {r['paper']} | `{r['config']}` | {r['metric']} | {r['paper_value']:g} ({source}) | "
                     f"{_fmt(r['ours'])} | {delta} | {verdict} | {evidence} |")
    return "\n".join(lines)


def write_readme(path: Path, table: str) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path}: markers {START} / {END} not found; add them where the table belongs")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    os.replace(tmp, path)


def add_result(result_file: Path, papers_dir: Path = PAPERS_DIR) -> Path:
    records = json.loads(result_file.read_text())
    if not records:
        raise SystemExit(f"{result_file}: no rows")
    paper, variant = records[0]["paper_key"], records[0]["variant"]
    target = papers_dir / paper / "results" / f"{variant}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result_file, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-papers report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print all rows as one JSON list")
    parser.add_argument("--write", type=Path, metavar="README", help="replace the table between the markers")
    parser.add_argument("--add", type=Path, metavar="CARD_RESULT", help="keep a run's card_result.json")
    args = parser.parse_args(argv)
    if args.add:
        print(f"kept {add_result(args.add)}")
        return 0
    rows = collect()
    if args.json:
        keys = ("paper", "variant", "metric", "paper_value", "ours", "delta", "pass", "source", "note", "evidence")
        json.dump([{k: r[k] for k in keys} for r in rows], sys.stdout, indent=2)
        print()
        return 0
    table = markdown(rows)
    if args.write:
        write_readme(args.write, table)
        print(f"updated {args.write}")
    else:
        print(table)
    return 0
