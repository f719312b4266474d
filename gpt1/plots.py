"""The analyses' figures as PNG files, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on a headless machine and never opens a window
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def line_plot(series: dict[str, Sequence[tuple[float, float]]], path: Path, *, title: str, xlabel: str,
              ylabel: str, log_x: bool = False, reference_lines: Sequence[float] = ()) -> Path:
    """One line with markers per series, each a list of (x, y) points, sorted by x."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, points in series.items():
        points = sorted(points)
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
    for y in reference_lines:
        ax.axhline(y, color="grey", linewidth=0.8, linestyle="--")
    if log_x:
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 10, 20, 50, 100, ...: plain numbers
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend()
    return _save(plt, fig, path)


def grouped_bar_plot(values: dict[str, dict[str, float]], path: Path, *, title: str, ylabel: str) -> Path:
    """values[group][bar]: one cluster of bars per group (e.g. per task), one colour per bar name."""
    plt = _pyplot()
    groups = list(values)
    bars = list(dict.fromkeys(bar for group in values.values() for bar in group))
    width = 0.8 / max(1, len(bars))
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(groups)), 4.2), dpi=120)
    for i, bar in enumerate(bars):
        xs = [g + (i - (len(bars) - 1) / 2) * width for g, group in enumerate(groups) if bar in values[group]]
        ys = [values[group][bar] for group in groups if bar in values[group]]
        ax.bar(xs, ys, width, label=bar)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(title=title, ylabel=ylabel)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(axis="y", alpha=0.3)
    if bars:
        ax.legend()
    return _save(plt, fig, path)
