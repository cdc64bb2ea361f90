"""The one matplotlib setup (the headless Agg backend) and atomic figure saving.

matplotlib is imported on first use, so a script's --help does not pay for it.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically (a reader never sees half a PNG) and close it."""
    plt = pyplot()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def line_plot(path: Path, series: list[tuple[str, list, list]], xlabel: str, ylabel: str, title: str,
              hlines: list[tuple[str, float]] = (), logy: bool = False) -> None:
    """Curves [(label, xs, ys), ...] and dotted horizontal references [(label, y), ...] in one axes."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, xs, ys in series:
        ax.plot(xs, ys, marker=".", label=label)
    for label, value in hlines:
        ax.axhline(value, linestyle=":", color="gray", label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
