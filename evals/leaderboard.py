"""Compare evaluation runs: ``python -m evals.leaderboard runs/*/eval/results.json --out <dir>``.

Prints a markdown table (one row per run, one column per metric) and writes ``leaderboard.csv``,
``leaderboard.md`` and ``leaderboard.png`` (one bar group per metric) under ``--out``. Incomplete
results (a run still going, or one that crashed) are listed and marked, never silently mixed in.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any


def load_runs(paths: list[str]) -> list[dict[str, Any]]:
    runs = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from None
        if "metrics" not in data:
            raise SystemExit(f"{path}: not a results.json (no 'metrics' key)")
        name = str(Path(path).parent.parent.name if Path(path).parent.name == "eval" else Path(path).parent.name)
        metrics = {k: v for k, v in data["metrics"].items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        runs.append({"run": name, "path": str(path), "complete": bool(data.get("complete")), "metrics": metrics})
    return runs


def select_columns(runs: list[dict[str, Any]], include: list[str] | None) -> list[str]:
    columns = sorted({k for r in runs for k in r["metrics"]})
    if include:
        columns = [c for c in columns if any(part in c for part in include)]
    return columns


def markdown(runs: list[dict[str, Any]], columns: list[str]) -> str:
    head = "| run | complete | " + " | ".join(columns) + " |"
    sep = "|---|---|" + "---:|" * len(columns)
    lines = [head, sep]
    for r in runs:
        cells = [f"{r['metrics'][c]:.4g}" if c in r["metrics"] else "" for c in columns]
        lines.append(f"| {r['run']} | {'yes' if r['complete'] else 'NO'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files")
    parser.add_argument("--out", required=True, help="folder for leaderboard.csv / .md / .png")
    parser.add_argument("--metrics", nargs="*", default=None, help="keep metrics whose name contains one of these")
    parser.add_argument("--sort", default=None, help="metric to sort runs by (descending)")
    args = parser.parse_args(argv)

    runs = load_runs(args.results)
    columns = select_columns(runs, args.metrics)
    if args.sort:
        runs.sort(key=lambda r: r["metrics"].get(args.sort, -math.inf), reverse=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(runs, columns)
    (out / "leaderboard.md").write_text(table + "\n")
    with open(out / "leaderboard.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "complete", "path", *columns])
        for r in runs:
            writer.writerow([r["run"], r["complete"], r["path"], *(r["metrics"].get(c, "") for c in columns)])
    if columns:
        from evals.charts import bar_chart

        bar_chart({r["run"]: {c: r["metrics"][c] for c in columns if c in r["metrics"]} for r in runs},
                  out / "leaderboard.png", "Evaluation runs", "value")
    print(table)
    return table


if __name__ == "__main__":
    main()
