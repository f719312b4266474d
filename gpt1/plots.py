"""The analyses' figures as PNG files, drawn with matplotlib's Agg backend (no display needed).

Each public function builds its figure with a `*_figure` function (which tests can inspect) and writes it
atomically: a kill leaves the previous PNG or the new one, never half a file. Figures use constrained layout,
titles are wrapped to the figure's width and legends sit outside the axes, so nothing is cut off or covered."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

WIDTH, HEIGHT = 6.4, 4.2  # inches, at 120 dpi


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on a headless machine and never opens a window
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float, ncols: int = 1, width_ratios: Sequence[float] | None = None):
    plt = _pyplot()
    fig, axes = plt.subplots(1, ncols, figsize=(width, HEIGHT), dpi=120, layout="constrained", squeeze=False,
                             width_ratios=width_ratios)
    return fig, list(axes[0])


def _title(fig, title: str) -> None:
    """A figure title wrapped to the figure's width (about 9 characters an inch at the default size)."""
    fig.suptitle(textwrap.fill(title, width=max(30, int(fig.get_figwidth() * 9))))


def save_figure(fig, path: Path) -> Path:
    """Write `fig` as a PNG to `path` atomically and close it."""
    from .checkpoint import write_bytes_atomic

    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _lines(ax, series: dict[str, Sequence[tuple[float, float]]], *, xlabel: str, ylabel: str, log_x: bool = False,
           integer_x: bool = False, reference_lines: Sequence[float] = ()) -> None:
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
    elif integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # e.g. numbers of layers: no 0.5
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def _bars(ax, values: dict[str, dict[str, float]], *, xlabel: str, ylabel: str) -> None:
    groups = list(values)
    bars = list(dict.fromkeys(bar for group in values.values() for bar in group))
    width = 0.8 / max(1, len(bars))
    for i, bar in enumerate(bars):
        xs = [g + (i - (len(bars) - 1) / 2) * width for g, group in enumerate(groups) if bar in values[group]]
        ys = [values[group][bar] for group in groups if bar in values[group]]
        ax.bar(xs, ys, width, label=bar)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.grid(axis="y", alpha=0.3)
    if bars:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def line_figure(series: dict[str, Sequence[tuple[float, float]]], *, title: str, xlabel: str, ylabel: str,
                log_x: bool = False, integer_x: bool = False, reference_lines: Sequence[float] = ()):
    fig, (ax,) = _figure(WIDTH + 1.6)
    _lines(ax, series, xlabel=xlabel, ylabel=ylabel, log_x=log_x, integer_x=integer_x,
           reference_lines=reference_lines)
    _title(fig, title)
    return fig


def line_plot(series: dict[str, Sequence[tuple[float, float]]], path: Path, *, title: str, xlabel: str,
              ylabel: str, log_x: bool = False, integer_x: bool = False, reference_lines: Sequence[float] = ()) -> Path:
    """One line with markers per series, each a list of (x, y) points, sorted by x; `integer_x`: ticks only
    at whole numbers."""
    return save_figure(line_figure(series, title=title, xlabel=xlabel, ylabel=ylabel, log_x=log_x,
                                   integer_x=integer_x, reference_lines=reference_lines), path)


def grouped_bar_figure(values: dict[str, dict[str, float]], *, title: str, xlabel: str, ylabel: str):
    fig, (ax,) = _figure(max(WIDTH, 1.2 * len(values)) + 1.6)
    _bars(ax, values, xlabel=xlabel, ylabel=ylabel)
    _title(fig, title)
    return fig


def grouped_bar_plot(values: dict[str, dict[str, float]], path: Path, *, title: str, ylabel: str,
                     xlabel: str = "") -> Path:
    """values[group][bar]: one cluster of bars per group (e.g. per task), one colour per bar name."""
    return save_figure(grouped_bar_figure(values, title=title, xlabel=xlabel, ylabel=ylabel), path)


def lines_and_bars_figure(series: dict[str, Sequence[tuple[float, float]]], values: dict[str, dict[str, float]], *,
                          title: str, xlabel: str, bar_xlabel: str, ylabel: str, log_x: bool = False,
                          reference_lines: Sequence[float] = ()):
    """Lines over x where points have an x, and grouped bars beside them for what has none (either may be
    empty; then the figure holds the other alone)."""
    if not values:
        return line_figure(series, title=title, xlabel=xlabel, ylabel=ylabel, log_x=log_x,
                           reference_lines=reference_lines)
    if not series:
        return grouped_bar_figure(values, title=title, xlabel=bar_xlabel, ylabel=ylabel)
    fig, (left, right) = _figure(2 * WIDTH + 1.6, ncols=2)
    _lines(left, series, xlabel=xlabel, ylabel=ylabel, log_x=log_x, reference_lines=reference_lines)
    _bars(right, values, xlabel=bar_xlabel, ylabel=ylabel)
    _title(fig, title)
    return fig
