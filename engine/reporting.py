"""Reports shared by evaluate.py and the demo: a plain-text table and the plot of top-1 against frames and cost.

Both read evaluate.py's JSON entries: {"top1": {"T": percent}, "top5": {...}, "trained_frames": [...]},
optionally "gflops" / "latency_ms" ({"T": value}) and, for several seeds, "top1_min" / "top1_max".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MISSING_CELL = "-"


def format_cell(value: float | None, number_format: str) -> str:
    """Return one table value in the format, or "-" for a value not measured (None)."""
    return MISSING_CELL if value is None else format(value, number_format)


def format_table(models: dict[str, dict[str, Any]], eval_frames: Sequence[int], key: str = "top1",
                 second: str | None = "top5", number_format: str = ".1f") -> str:
    """Return a plain-text table: one row per model, one column per frame count (``top1 / top5``)."""
    header = ["model"] + [f"{frames}F" for frames in eval_frames]
    rows = [header]
    for name, entry in models.items():
        cells = [name]
        for frames in eval_frames:
            cell = format_cell(entry[key][str(frames)], number_format)
            if second:
                cell += f" / {format_cell(entry[second][str(frames)], number_format)}"
            cells.append(cell)
        rows.append(cells)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def has_costs(models: dict[str, dict[str, Any]], eval_frames: Sequence[int]) -> bool:
    """True when every model has GFLOPs at every frame count (the cost panel can be drawn)."""
    return bool(models) and all(str(frames) in entry.get("gflops", {}) for entry in models.values() for frames in eval_frames)


def draw_top1(axes: Any, entry: dict[str, Any], eval_frames: Sequence[int], positions: Sequence[float],
              label: str) -> None:
    """Draw one model's top-1 at the given x positions: a line, its min-max band, circles on trained counts."""
    values = [entry["top1"][str(frames)] for frames in eval_frames]
    line, = axes.plot(positions, values, marker="o", label=label)
    if "top1_min" in entry and "top1_max" in entry:
        lows = [entry["top1_min"][str(frames)] for frames in eval_frames]
        highs = [entry["top1_max"][str(frames)] for frames in eval_frames]
        axes.fill_between(positions, lows, highs, color=line.get_color(), alpha=0.15)
    trained = [(position, value) for frames, position, value in zip(eval_frames, positions, values)
               if frames in entry.get("trained_frames", [])]
    axes.scatter([position for position, _ in trained], [value for _, value in trained], s=90,
                 facecolors="none", edgecolors=line.get_color())


def draw_cost_panel(axes: Any, models: dict[str, dict[str, Any]], eval_frames: Sequence[int],
                    labels: dict[str, str]) -> None:
    """Top-1 against GFLOPs per video (log scale), one line per model, each point one frame count."""
    from matplotlib.ticker import NullFormatter

    for name, entry in models.items():
        draw_top1(axes, entry, eval_frames, [entry["gflops"][str(frames)] for frames in eval_frames], labels.get(name, name))
    first = next(iter(models.values()))
    ticks = [first["gflops"][str(frames)] for frames in eval_frames]
    axes.set_xscale("log")
    axes.set_xticks(ticks, [f"{tick:.3g}\n{frames}F" for tick, frames in zip(ticks, eval_frames)], fontsize=7)
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("GFLOPs per video (multiply-adds, G; log scale; ticks: the first model's frame counts)")
    axes.set_ylabel("top-1 (%)")
    axes.set_title("top-1 against cost", fontsize=10)
    axes.grid(alpha=0.3)


def plot_top1(models: dict[str, dict[str, Any]], eval_frames: Sequence[int], path: Path, title: str,
              labels: dict[str, str] | None = None) -> Any:
    """Write a PNG of top-1 against frames, one line per model (a band where min / max are recorded).

    When every model has "gflops" at every frame count, a second panel plots top-1 against GFLOPs per video.

    Returns
    -------
    matplotlib.figure.Figure
        The (closed) figure: one axes, or two with the cost panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = labels or {}
    with_costs = has_costs(models, eval_frames)
    figure, panels = plt.subplots(1, 2 if with_costs else 1, figsize=(14.0 if with_costs else 8.6, 4.2), dpi=120,
                                  squeeze=False)
    axes = panels[0][0]
    for name, entry in models.items():
        draw_top1(axes, entry, eval_frames, list(eval_frames), labels.get(name, name))
    axes.set_xlabel("frames at evaluation")
    axes.set_ylabel("top-1 (%)")
    axes.set_xticks(list(eval_frames))
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    if with_costs:
        draw_cost_panel(panels[0][1], models, eval_frames, labels)
    panels[0][-1].legend(title="circled: trained frame counts", fontsize=8, title_fontsize=8, loc="upper left",
                         bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)
    return figure
