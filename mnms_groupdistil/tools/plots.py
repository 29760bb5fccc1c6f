"""PNG plots shared by the tools: matplotlib without a display, how a group is named, and the group weights of
runs over training (:func:`plot_group_weights`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnms_groupdistil.tools.runs import read_group_weights

__all__ = ["group_name", "plot_group_weights", "pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, plt: Any, path: str | Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (PNG, 120 dpi) and close it; returns ``path``."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def group_name(label: str, group: str) -> str:
    """``"vendor A"``; the bare group name when ``label`` is empty."""
    return f"{label} {group}".strip()


def plot_group_weights(
    panels: Mapping[str, Sequence[str | Path]], path: str | Path, title: str = "", group_label: str = "group"
) -> Path | None:
    """Group weights over training iterations: one panel per entry of ``panels``, the mean over its runs.

    With several runs in a panel (one per seed) the shaded band spans the lowest to the highest weight among
    them at each iteration. Weights are the runs' TensorBoard ``group_weight/<group>`` scalars
    (:func:`mnms_groupdistil.tools.runs.read_group_weights`); runs that logged none are left out.

    Args:
        panels: panel title -> run folders.
        path: the PNG to write.
        title: figure title.
        group_label: what a group is called in the legend (``vendor``; empty for descriptive group names).

    Returns:
        The PNG, or None when no run logged group weights.
    """
    series = {name: [read_group_weights(d) for d in dirs] for name, dirs in panels.items()}
    series = {name: [s for s in runs if s] for name, runs in series.items()}
    series = {name: runs for name, runs in series.items() if runs}
    if not series:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(3.6 * len(series), 3.2), squeeze=False, sharey=True)
    for ax, (name, runs) in zip(axes[0], series.items()):
        for group in sorted({g for run in runs for g in run}):
            per_seed = [dict(run[group]) for run in runs if group in run]
            steps = sorted(set.intersection(*(set(p) for p in per_seed)))
            values = [[p[s] for p in per_seed] for s in steps]
            line = ax.plot(steps, [sum(v) / len(v) for v in values], label=group_name(group_label, group))[0]
            if len(per_seed) > 1:
                low, high = [min(v) for v in values], [max(v) for v in values]
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("group weight")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, plt, path)
