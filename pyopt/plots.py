"""Learning-curve plots as in the chapter: test loss (log scale) against epoch.

Uses matplotlib's Agg backend through ``matplotlib.figure.Figure`` (no display, no pyplot
global state), so it works headless and in threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ._deps import missing

try:
    import matplotlib  # noqa: F401  (imported here only to say what to install when it is missing)
    import pandas as pd
except ImportError as exc:
    raise missing("pyopt.plots", exc) from exc

__all__ = ["plot_histories"]


def plot_histories(
    histories: Mapping[str, pd.DataFrame],
    path,
    *,
    title: str = "",
    column: str = "testing_loss",
    baseline: float | None = None,
    styles: Mapping[str, str] | None = None,
):
    """Plot ``column`` of each history against ``epoch`` on a log y axis and save it to ``path``.

    Args:
        histories: ``{label: history}``, each with columns ``epoch`` and ``column``
            (as :func:`pyopt.training.train` returns). Non-finite and non-positive values
            are left out (a log axis cannot show them); a curve with none left is listed in
            the legend as "(no finite loss)".
        path: output file; the format follows the suffix (``.png``, ``.svg``, ...). Parent
            folders are created.
        title: the figure title.
        column: which loss to plot (``testing_loss`` or ``training_loss``).
        baseline: if given, a dashed horizontal line, e.g. the constant predictor's test MSE.
        styles: optional matplotlib line styles per label (``"--"``, ``":"``, ...).

    Returns:
        The saved path as a :class:`pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, history in histories.items():
        epochs = np.asarray(history["epoch"], dtype=float)
        loss = np.asarray(history[column], dtype=float)
        keep = np.isfinite(loss) & (loss > 0)
        style = (styles or {}).get(label, "-")
        if keep.any():
            ax.plot(epochs[keep], loss[keep], style, label=str(label))
        else:
            ax.plot([], [], style, label=f"{label} (no finite loss)")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", linewidth=1, label=f"constant predictor ({baseline:.4g})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(column.replace("_", " ") + " (MSE)")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
