"""Charts of evaluation results (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the headless Agg backend: charts are files, no display is assumed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Lay ``fig`` out, write it to ``path`` (its folder created) and close it (pyplot keeps open figures alive)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def bar_chart(series: dict[str, dict[str, float]], path: str | os.PathLike, title: str, ylabel: str,
              ylim: tuple[float, float] | None = None) -> Path:
    """Grouped bars: one group per category (inner keys), one bar per series (outer keys)."""
    plt = pyplot()
    categories = list(dict.fromkeys(c for values in series.values() for c in values))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(categories) * max(1, len(series)) ** 0.5), 4.0))
    for i, (label, values) in enumerate(series.items()):
        xs = [j + i * width - 0.4 + width / 2 for j in range(len(categories))]
        ax.bar(xs, [values.get(c, float("nan")) for c in categories], width, label=label)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    if len(series) > 1:
        ax.legend(fontsize="small")
    return save_figure(fig, path)
