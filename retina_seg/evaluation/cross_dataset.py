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


THRESHOLD_NOTES = {
    "source": "Threshold (threshold=source): each run's own validation threshold, the one `predict` and the served "
              "model apply, so off the diagonal F1 is what a deployment without labelled images of the target gets.",
    "target": "Threshold (threshold=target): chosen on each target's validation split, which needs the target's "
              "labels and so is the optimistic end; `test_f1_at_source_threshold` is F1 at the run's own validation "
              "threshold (what `predict` applies), beside it.",
}


def pivot_markdown(table: pd.DataFrame, metric: str, title: str | None = None) -> str:
    matrix = pivot(table, metric)
    return f"{title or metric}, trained on (rows) x tested on (columns)\n\n{matrix.to_markdown(floatfmt='.4f')}\n"


def write_cross_dataset(table: pd.DataFrame, staging: Path, rule: str) -> None:
    """The table's three files; `rule`: the threshold rule of the cells off the diagonal (source or target)."""
    staging.mkdir(parents=True, exist_ok=True)
    first = ["trained_on", "run_id", "tested_on", "scale", "threshold_rule"]
    metrics = sorted(c for c in table if c.startswith("test_") or c in ("threshold", "source_threshold"))
    table[first + metrics].to_csv(staging / f"{artifacts.CROSS_DATASET}.csv", index=False)
    scales = pivot(table, "scale")
    notes = ("Diagonal cells (a run's own dataset) are the run's own logged test metrics; the others evaluate the "
             f"model on the target's test split. {THRESHOLD_NOTES[rule]} AUC and AUPR do not depend on the threshold. "
             "`scale`: the median factor target images were resized by to match the training FOV width (rescale=fov).")
    f1 = pivot_markdown(table, "test_f1", f"test F1 at the {rule} threshold")
    beside = (f"## {pivot_markdown(table, 'test_f1_at_source_threshold', 'test F1 at the source threshold')}\n"
              if rule == "target" else "")
    (staging / f"{artifacts.CROSS_DATASET}.md").write_text(
        f"# Cross-dataset evaluation\n\n{notes}\n\n## {f1}\n{beside}"
        f"## {pivot_markdown(table, 'test_auc')}\n## scale\n\n{scales.to_markdown(floatfmt='.3f')}\n")
    plot_heatmap(pivot(table, "test_f1"), f"Test F1 at the {rule} threshold: trained on (rows) x tested on (columns)",
                 staging / f"{artifacts.CROSS_DATASET}.png")
