"""The record of a cross-validation parent run: a per-fold table, mean and sd over folds, and the folds together.

Per fold, every test metric of the fold's run (`test_f1`, `test_auc`, ..., `threshold`, `objective`)
becomes a column of `folds.csv` / `folds.md`; the parent logs each as `<metric>_fold_mean` and
`<metric>_fold_sd` (sample sd over folds, ddof=1). The parent's own `test_*` metrics describe the
folds together: the averaged-probability ensemble on an official test split, or, without one, the
pooled out-of-fold table (every image scored by the one fold model that never saw it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pandas as pd

from retina_seg.evaluation.scoring import write_metrics
from retina_seg.inference.metrics import summarize
from retina_seg.reporting.report import SHOWN
from retina_seg.tracking import artifacts


def fold_table(runs: List[tuple], counts: List[Dict[str, int]]) -> pd.DataFrame:
    """One row per fold from (run id, summary incl. objective) pairs and the fold's split sizes; the
    per-image sd columns stay in the folds' own runs."""
    rows = []
    for fold, ((run_id, summary), sizes) in enumerate(zip(runs, counts, strict=True)):
        metrics = {k: v for k, v in summary.items() if not k.endswith("_sd")}
        rows.append({"fold": fold, "run_id": run_id, **{f"n_{s}": n for s, n in sizes.items()}, **metrics})
    return pd.DataFrame(rows)


def fold_statistics(table: pd.DataFrame) -> Dict[str, float]:
    """`<metric>_fold_mean` and `<metric>_fold_sd` for every metric column of the fold table."""
    stats = {}
    for column in table.columns:
        if column in ("fold", "run_id") or column.startswith("n_"):
            continue
        values = table[column].astype(float)
        stats[f"{column}_fold_mean"] = float(values.mean())
        stats[f"{column}_fold_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return stats


def mean_thresholds(summaries: List[dict], channels: List[str]) -> Dict[str, float]:
    """The ensemble's threshold per channel: the mean of the folds' validation-chosen thresholds."""
    key = (lambda c: "threshold") if len(channels) == 1 else (lambda c: f"threshold_{c}")
    return {c: float(np.mean([s[key(c)] for s in summaries])) for c in channels}


def write_fold_table(table: pd.DataFrame, staging: Path, title: str) -> None:
    """`folds.csv` (every column) and `folds.md` (the main metrics, with a mean ± sd row)."""
    table.to_csv(staging / artifacts.FOLD_TABLE, index=False)
    stats = fold_statistics(table)
    columns = [c for c in SHOWN if c in table]
    shown = table[["fold", "run_id", *[c for c in table if c.startswith("n_")]]].astype(str)
    shown["run_id"] = shown["run_id"].str[:8]
    for column in columns:
        shown[column] = table[column].map(lambda v: f"{v:.4f}")
    footer = {"fold": "mean ± sd", **{c: f"{stats[f'{c}_fold_mean']:.4f} ± {stats[f'{c}_fold_sd']:.4f}"
                                       for c in columns}}
    shown = pd.concat([shown, pd.DataFrame([footer])], ignore_index=True).fillna("")
    (staging / artifacts.FOLD_TABLE_MD).write_text(f"# {title}\n\n{shown.to_markdown(index=False)}\n")


def out_of_fold(fold_dirs: List[Path], channels: List[str], thresholds: Dict[str, float], staging: Path,
                extra: dict | None = None) -> dict:
    """Pool the folds' per-image tables (each image tested once) into the parent's table and summary (with
    `extra`, as `evaluate_model` keeps it)."""
    tables = [pd.read_csv(d / artifacts.PER_IMAGE, dtype={"image": str}) for d in fold_dirs]
    pooled = pd.concat(tables, ignore_index=True)
    summary = {**summarize(pooled, channels, thresholds), **(extra or {})}
    write_metrics(staging, pooled, summary)
    return summary
