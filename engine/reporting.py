"""Reports shared by evaluate.py and the demo: a plain-text accuracy table and a top-1 against frames plot.

Both read evaluate.py's JSON entries: {"top1": {"T": percent}, "top5": {...}, "trained_frames": [...]} and,
for several seeds, "top1_min" / "top1_max".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def format_table(models: dict[str, dict[str, Any]], rates: Sequence[int], key: str = "top1",
                 second: str | None = "top5") -> str:
    """Return a plain-text table: one row per model, one column per frame count (``top1 / top5``)."""
    header = ["model"] + [f"{rate}F" for rate in rates]
    rows = [header]
    for name, entry in models.items():
        cells = [name]
        for rate in rates:
            cell = f"{entry[key][str(rate)]:.1f}"
            if second:
                cell += f" / {entry[second][str(rate)]:.1f}"
            cells.append(cell)
        rows.append(cells)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def plot_top1(models: dict[str, dict[str, Any]], rates: Sequence[int], path: Path, title: str,
              labels: dict[str, str] | None = None) -> None:
    """Write a PNG of top-1 against frames, one line per model (a band where min / max are recorded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.6, 4.2), dpi=120)
    for name, entry in models.items():
        values = [entry["top1"][str(rate)] for rate in rates]
        line, = axes.plot(rates, values, marker="o", label=(labels or {}).get(name, name))
        if "top1_min" in entry and "top1_max" in entry:
            lows = [entry["top1_min"][str(rate)] for rate in rates]
            highs = [entry["top1_max"][str(rate)] for rate in rates]
            axes.fill_between(rates, lows, highs, color=line.get_color(), alpha=0.15)
        trained = [rate for rate in entry.get("trained_frames", []) if rate in rates]
        axes.scatter(trained, [entry["top1"][str(rate)] for rate in trained], s=90, facecolors="none",
                     edgecolors=line.get_color())
    axes.set_xlabel("frames at evaluation")
    axes.set_ylabel("top-1 (%)")
    axes.set_xticks(list(rates))
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(title="circled: trained frame counts", fontsize=8, title_fontsize=8, loc="upper left",
                bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)
