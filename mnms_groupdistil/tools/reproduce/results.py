"""The grid's summary: ``results.csv``, ``results.md`` (the paper's tables, per cell of a study) and the plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mnms_groupdistil.tools.paper import (
    group_table,
    network_label,
    paired_difference_table,
    paper_table,
    plot_group_accuracy,
    plot_step_sizes,
    step_size_table,
    study_table,
    write_csv,
)
from mnms_groupdistil.tools.plots import plot_group_weights
from mnms_groupdistil.tools.registry import DatasetSpec

from .plan import Run, cell_folder

__all__ = ["write_outputs"]


def write_outputs(
    spec: DatasetSpec,
    runs: Sequence[Run],
    rows: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    settings: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.md`` and the plots; return them by name.

    In a study (runs in several grid cells) ``results.md`` starts with the stability table of every
    split (:func:`mnms_groupdistil.tools.paper.study_table`), then holds the usual tables and plots once per cell.

    Args:
        spec: the dataset.
        runs: the runs, in the order of ``rows``.
        rows: from :func:`result_row`.
        output_dir: where to write.
        settings: lines describing how the grid was run, printed at the top of ``results.md``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = list(dict.fromkeys(run.split for run in runs))
    seeds = sorted({run.seed for run in runs})
    cells = list(dict.fromkeys(run.cell for run in runs))
    written = {"results.csv": write_csv(rows, out / "results.csv")}
    lines = [f"# {spec.title}", ""]
    lines += [f"- {s}" for s in settings]
    lines += [
        f"- Training seeds: {', '.join(map(str, seeds))} ({len(seeds)}); the paper averaged {spec.paper_seeds}.",
        "- Ours: mean ± sample standard deviation over the seeds, in %. Paper: its reported mean (± std where given).",
        "",
    ]
    if cells != [""]:
        lines += [
            "## Stability study: the last epoch of every run, per cell",
            "",
            "Worst-group accuracy of the last epoch (mean ± std over seeds, %); swing: the mean absolute change "
            "of that figure between consecutive epochs among the last three (points, mean over seeds); runs <= 55%: "
            "runs whose last epoch left some group at or below 55%. Choose settings on the val columns only.",
            "",
        ]
        for split in splits:
            lines += [f"### {split}", "", *study_table(spec, rows, split), ""]
    plots: list[Path] = []
    for cell in cells:
        mine = [(run, row) for run, row in zip(runs, rows) if run.cell == cell]
        cell_lines, cell_plots = _cell_sections(
            spec, [run for run, _ in mine], [row for _, row in mine], out, cell_folder(dict(mine[0][0].settings))
        )
        if cell:
            lines += [f"## Cell {cell}", ""]
            cell_lines = [f"#{line}" if line.startswith("## ") else line for line in cell_lines]
        lines += cell_lines
        plots += cell_plots
    if plots:
        lines += ["## Plots", "", *(f"- `{p.name}`" for p in plots), ""]
    written["results.md"] = out / "results.md"
    written["results.md"].write_text("\n".join(lines), encoding="utf-8")
    written.update({p.name: p for p in plots})
    return written


def _cell_sections(
    spec: DatasetSpec, runs: Sequence[Run], rows: Sequence[Mapping[str, Any]], out: Path, suffix: str
) -> tuple[list[str], list[Path]]:
    """The tables (Markdown lines) and plots of the runs of one grid cell; ``suffix`` ends the plots' names."""
    splits = list(dict.fromkeys(run.split for run in runs))
    tag = f"_{suffix}" if suffix else ""
    plots: list[Path] = []
    for split in splits:
        mine = [run for run in runs if run.split == split]
        accuracy = plot_group_accuracy(spec, rows, split, out / f"group_accuracy_{spec.name}_{split}{tag}.png")
        split_rows = [row for row in rows if row["split"] == split]
        methods = {
            f"{m.label} {network_label(spec, m, split_rows)}": [r.run_dir for r in mine if r.key == m.key]
            for m in spec.methods
        }
        weights = plot_group_weights(
            methods,
            out / f"group_weights_{spec.name}_{split}{tag}.png",
            f"{spec.name} {split}: group weights",
            spec.group_label,
        )
        by_eta: dict[float, list[Path]] = {}
        for row, run in zip(rows, runs):
            if run.split == split and run.method.key == spec.sweep and row["eta_w"] is not None:
                by_eta.setdefault(float(row["eta_w"]), []).append(run.run_dir)
        sweep_weights = None
        if len(by_eta) > 1:
            sweep_weights = plot_group_weights(
                {f"eta_w = {eta:g}": by_eta[eta] for eta in sorted(by_eta)},
                out / f"group_weights_eta_{spec.name}_{split}{tag}.png",
                f"{spec.name} {split}: {spec.method(spec.sweep).label} group weights per eta_w",
                spec.group_label,
            )
        steps = plot_step_sizes(spec, rows, split, out / f"step_sizes_{spec.name}_{split}{tag}.png")
        plots += [p for p in (accuracy, weights, sweep_weights, steps) if p is not None]
    lines = [*paper_table(spec, rows, splits), ""]
    if spec.note:
        lines += [spec.note, ""]
    for split in splits:
        lines += [f"## Per-group test accuracy (%), {split}", "", *group_table(spec, rows, split), ""]
    sweep = spec.method(spec.sweep)
    lines += [
        f"## Paired difference {sweep.label} - KD per seed (test accuracy, points)",
        "",
        *paired_difference_table(spec, rows, splits),
        "",
        "Each seed's two students distil from the same teacher; the spread is the sample std of the differences.",
        "",
    ]
    if any(run.step_size is not None for run in runs):
        label = sweep.label
        lines += [
            f"## {label} against the group weight step size eta_w (test accuracy, %)",
            "",
            *step_size_table(spec, rows, splits),
            "",
            f"With eta_w = 0 the weights stay uniform and {label} trains on sum_d (1/G) mean_d: the same objective "
            "as KD only on batches that hold every group equally often (batching balanced); on other batches it "
            "is not KD.",
            "",
        ]
    return lines, plots
