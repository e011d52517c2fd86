"""`python -m retina_seg.compare [sweep=<id>|experiment=<name>] [metric=test_auc]`: one table per study.

One row per training run (failed ones included, last): what was varied, best validation scores,
test scores, epochs, training time, parameters and inference time, sorted by `metric`. Written as
CSV and Markdown with a bar chart (mean and sd over runs that repeat a configuration, e.g. over
seeds) and all validation curves on one figure (PNG + SVG); printed, and logged to MLflow as the
run `compare-<sweep id>` (or `compare-<experiment>`).
With no selector: the most recent sweep of `tracking.experiment`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import matplotlib
import mlflow
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from retina_seg.cli import run_app, user_errors
from retina_seg.config import CompareConfig, validate
from retina_seg.errors import UserError
from retina_seg.reporting.figures import PALETTE, epoch_axis, save_figure
from retina_seg.reporting.report import comparison_sections, write_report
from retina_seg.tracking import artifacts
from retina_seg.tracking.runs import check_tracking, log_staged, tracked_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)

CONFIG_COLUMNS = {  # table column -> MLflow param
    "backbone": "backbone.name", "arch": "arch.name", "loss.dice": "loss.dice", "loss.focal": "loss.focal",
    "loss.bce": "loss.bce", "loss.jaccard": "loss.jaccard", "image_size": "image_size",
    "augmentation": "augmentation.name", "lr": "trainer.lr", "dataset": "data.name", "seed": "seed",
}
RESULT_COLUMNS = {  # table column -> MLflow metric
    "test_f1": "test_f1", "test_auc": "test_auc", "test_iou": "test_iou", "objective": "objective",
    "train_minutes": "train_seconds", "inference_ms": "inference_ms_per_image",
}


class CompareError(UserError):
    """Nothing to compare; the message says what was looked for."""


def select_runs(client: MlflowClient, config: CompareConfig) -> tuple[list, str]:
    """The training runs to compare and a label for them."""
    name = config.experiment or config.tracking.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise CompareError(f"experiment '{name}' does not exist in {config.tracking.uri}")
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=5000)
            # a cross-validation parent stands for its folds; evaluations and tables are not training runs
            if not {"evaluates_run", "comparison", "cv_fold", "cross_dataset"} & set(r.data.tags)]
    if config.sweep:
        runs = [r for r in runs if r.data.tags.get("sweep_id") == config.sweep]
        label = f"sweep {config.sweep}"
    elif not config.experiment and any("sweep_id" in r.data.tags for r in runs):
        latest = max((r for r in runs if "sweep_id" in r.data.tags), key=lambda r: r.info.start_time)
        runs = [r for r in runs if r.data.tags.get("sweep_id") == latest.data.tags["sweep_id"]]
        label = f"sweep {latest.data.tags['sweep_id']}"
    else:
        label = f"experiment {name}"
    if not any(r.info.status == "FINISHED" for r in runs):
        raise CompareError(f"{label} in experiment '{name}' has no finished runs to compare "
                           f"({len(runs)} run(s): {sorted({r.info.status for r in runs}) or 'none'})")
    return runs, label


def _best(client: MlflowClient, run_id: str, key: str) -> tuple[float, int]:
    history = client.get_metric_history(run_id, key)
    return (max(m.value for m in history), len(history)) if history else (float("nan"), 0)


def _short(value) -> str:
    """A param value for a label: long floats (Optuna draws) cut to 4 significant digits."""
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def comparison_table(client: MlflowClient, runs: list, metric: str, ascending: bool) -> pd.DataFrame:
    rows = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        best_iou, epochs = _best(client, run.info.run_id, "val_iou_score")
        row = {"run_id": run.info.run_id, "status": run.info.status,
               **{column: params.get(param) for column, param in CONFIG_COLUMNS.items()},
               "best_val_iou": best_iou, "best_val_f1": _best(client, run.info.run_id, "val_f1-score")[0],
               "epochs": epochs, **{column: metrics.get(key) for column, key in RESULT_COLUMNS.items()},
               "parameters": params.get("model.parameters", metrics.get("parameters"))}  # a metric in old runs
        if row["train_minutes"] is not None:
            row["train_minutes"] /= 60
        if metric not in row:
            row[metric] = metrics.get(metric)
        rows.append(row)
    table = pd.DataFrame(rows)
    table["parameters"] = pd.to_numeric(table["parameters"])
    table = table.astype({"parameters": "Int64", "epochs": "Int64"})
    varied = [c for c in CONFIG_COLUMNS if c != "seed" and table[c].nunique(dropna=False) > 1]
    labels = table[varied].apply(lambda row: " ".join(f"{k}={_short(v)}" for k, v in row.items()), axis=1)
    table.insert(2, "config", labels if varied else table["backbone"])
    if metric not in table or table[metric].isna().all():
        raise CompareError(f"metric={metric!r} was not logged by these runs (try test_f1, test_auc, objective)")
    return table.sort_values(metric, ascending=ascending, na_position="last").reset_index(drop=True)


def plot_metric_bars(table: pd.DataFrame, metric: str, label: str, path: Path) -> None:
    """Mean of `metric` per configuration, with the sd over its repeats (seeds) as error bars."""
    stats = table.dropna(subset=[metric]).groupby("config", sort=False)[metric].agg(["mean", "std", "count"])
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(stats)), 4))
    ax.bar(range(len(stats)), stats["mean"], yerr=stats["std"].where(stats["count"] > 1), capsize=4,
           color=PALETTE[4], error_kw={"ecolor": PALETTE[7]})
    ax.set_xticks(range(len(stats)), stats.index, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("configuration")
    ax.set_ylabel(f"{metric} (mean, error bar: sd over repeats)")
    ax.set_title(f"{label}: {metric} per configuration (n = {int(stats['count'].sum())} runs)")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def plot_validation_curves(client: MlflowClient, table: pd.DataFrame, label: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for _, row in table.iterrows():
        history = client.get_metric_history(row["run_id"], "val_f1-score")
        if history:
            ax.plot([m.step + 1 for m in history], [m.value for m in history], marker=".",
                    label=f"{row['config']} ({row['run_id'][:6]})")
    epoch_axis(ax)
    ax.set_ylabel("validation F-score (Dice, 0-1)")
    ax.set_title(f"{label}: validation F-score per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def compare(config: CompareConfig, workdir: Path) -> pd.DataFrame:
    check_tracking(config.tracking)
    client = MlflowClient(config.tracking.uri)
    runs, label = select_runs(client, config)
    table = comparison_table(client, runs, config.metric, config.ascending)
    staging = artifacts.staging(workdir)
    staging.mkdir(parents=True, exist_ok=True)
    table.to_csv(staging / f"{artifacts.COMPARISON}.csv", index=False)
    markdown = table.drop(columns=["run_id"]).to_markdown(index=False, floatfmt=".4f")
    (staging / f"{artifacts.COMPARISON}.md").write_text(f"# {label}, sorted by {config.metric}\n\n{markdown}\n")
    bars, curves = artifacts.COMPARISON_FIGURES
    plot_metric_bars(table, config.metric, label, staging / bars)
    plot_validation_curves(client, table, label, staging / curves)
    write_report(staging, f"Comparison of {label}",
                 comparison_sections(table, label, config.metric, list(artifacts.COMPARISON_FIGURES)))
    best = table.iloc[0]
    print(f"{label}: {len(table)} run(s), sorted by {config.metric}\n\n{markdown}\n")
    print(f"best: run {best['run_id']} ({best['config']}) {config.metric}={best[config.metric]:.4f}")
    experiment_id = runs[0].info.experiment_id
    with tracked_run(config.tracking, staging, {"comparison": label, "best_run": best["run_id"]},
                     experiment_id=experiment_id, run_name=f"compare-{label.split(' ', 1)[1]}"):
        mlflow.log_params({"metric": config.metric, "runs": len(table)})
        log_staged(staging)
    return table


@hydra.main(config_path="conf/apps/compare", config_name="compare", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    compare(validate(cfg), Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    run_app(main)
