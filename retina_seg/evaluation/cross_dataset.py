"""The trained-on x tested-on table: `cross_dataset.csv` (every metric of every pair, long form),
`cross_dataset.md` (F1 and AUC as matrices) and `cross_dataset.png` (the F1 matrix as a heatmap).

Rows are runs, labelled by their training dataset and run id; columns are the tested datasets.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from retina_seg.reporting.result_figures import plot_heatmap
from retina_seg.tracking import artifacts


def _label(row) -> str:
    return f"{row['trained_on']} ({row['run_id'][:8]})"


def pivot(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    labelled = table.assign(trained=table.apply(_label, axis=1))
    matrix = labelled.pivot(index="trained", columns="tested_on", values=metric)
    order = list(dict.fromkeys(labelled["tested_on"]))
    return matrix.reindex(index=list(dict.fromkeys(labelled["trained"])), columns=order)


def pivot_markdown(table: pd.DataFrame, metric: str) -> str:
    matrix = pivot(table, metric)
    return f"{metric}, trained on (rows) x tested on (columns)\n\n{matrix.to_markdown(floatfmt='.4f')}\n"


def write_cross_dataset(table: pd.DataFrame, staging: Path) -> None:
    staging.mkdir(parents=True, exist_ok=True)
    first = ["trained_on", "run_id", "tested_on", "scale"]
    metrics = sorted(c for c in table if c.startswith("test_") or c == "threshold")
    table[first + metrics].to_csv(staging / f"{artifacts.CROSS_DATASET}.csv", index=False)
    scales = pivot(table, "scale")
    notes = ("Diagonal cells (a run's own dataset) are the run's own logged test metrics; the others evaluate the "
             "model on the target's test split, threshold chosen on the target's validation split. `scale`: the "
             "median factor target images were resized by to match the training FOV width (rescale=fov).")
    (staging / f"{artifacts.CROSS_DATASET}.md").write_text(
        f"# Cross-dataset evaluation\n\n{notes}\n\n## {pivot_markdown(table, 'test_f1')}\n"
        f"## {pivot_markdown(table, 'test_auc')}\n## scale\n\n{scales.to_markdown(floatfmt='.3f')}\n")
    plot_heatmap(pivot(table, "test_f1"), "Test F1: trained on (rows) x tested on (columns)",
                 staging / f"{artifacts.CROSS_DATASET}.png")
