"""AlpacaEval metrics from annotations (Li et al. 2023, tatsu-lab/alpaca_eval ``pairwise_to_winrate``).

Preferences are in [1, 2] with 2 meaning the second output (the evaluated model) is better. Run as
``python -m evals.alpaca_metrics annotations.json`` to print the leaderboard row of stored annotations.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from statistics import mean, stdev
from typing import Any


def winrate_metrics(preferences: list[float | None]) -> dict[str, Any]:
    """win_rate = 100 mean(p - 1), standard_error = 100 sem (ddof 1), discrete = 100 (W + D/2) / n."""
    prefs = [float(p) for p in preferences if p is not None and not math.isnan(float(p))]
    n = len(prefs)
    wins = sum(p > 1.5 for p in prefs)
    losses = sum(p < 1.5 for p in prefs)
    draws = n - wins - losses
    shifted = [p - 1.0 for p in prefs]
    return {
        "win_rate": 100 * mean(shifted) if n else float("nan"),
        "standard_error": 100 * stdev(shifted) / math.sqrt(n) if n > 1 else float("nan"),
        "n_wins": wins,
        "n_wins_base": losses,
        "n_draws": draws,
        "n_total": n,
        "discrete_win_rate": 100 * (wins + 0.5 * draws) / n if n else float("nan"),
    }


def load_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Official annotation files: a JSON list of rows with output_1, output_2 and preference."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of annotation rows")
    for i, row in enumerate(rows):
        for key in ("instruction", "output_1", "output_2", "preference"):
            if key not in row:
                raise ValueError(f"{path}: row {i}: missing key {key!r}")
    return rows


def metrics_from_annotations(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The leaderboard columns computable from annotations alone (LC needs a GLM fit: length_control)."""
    metrics = winrate_metrics([r["preference"] for r in rows])
    metrics["avg_length"] = int(mean(len(r["output_2"]) for r in rows)) if rows else 0
    return metrics


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m evals.alpaca_metrics <annotations.json>")
    print(json.dumps(metrics_from_annotations(load_annotations(argv[0])), indent=2))


if __name__ == "__main__":
    main()
