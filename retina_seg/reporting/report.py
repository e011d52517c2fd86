"""Reports a reader can open without MLflow: `report.md` and one self-contained `report.html` per run.

A training run's report is assembled from the files it staged: the config that differs from the
defaults, the data split, test metrics as mean ± sd over images (with the second human observer as a
reference row where the dataset ships one), training curves, ROC and PR curves, the per-image table
and error maps of the best and worst test images. A cross-validation parent or a sweep's comparison
gets its comparison tables and figures instead. In the HTML every image is embedded (base64), so
the one file travels; the Markdown links the figures beside it in the run's artifacts.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from retina_seg.config import compose_tree
from retina_seg.data.loading import SPLITS
from retina_seg.tracking import artifacts
from retina_seg.tracking.runs import flatten

METRICS = ("f1", "iou", "sensitivity", "specificity", "accuracy", "balanced_accuracy", "auc", "aupr")
# the columns of a fold table that its Markdown copy and the reports show
SHOWN = ("test_f1", "test_iou", "test_sensitivity", "test_specificity", "test_auc", "test_aupr", "threshold",
         "objective")


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    image: str | None = None  # a path relative to the staging folder


def config_changes(cfg: DictConfig) -> pd.DataFrame:
    """Every flattened key whose value differs from the defaults (the tree composed without overrides)."""
    resolved = flatten(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    defaults = flatten(OmegaConf.to_container(compose_tree(), resolve=True, enum_to_str=True))
    rows = [{"key": key, "value": _cut(value), "default": _cut(defaults.get(key, ""))}
            for key, value in sorted(resolved.items()) if defaults.get(key) != value]
    return pd.DataFrame(rows, columns=["key", "value", "default"])


def _cut(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _mean_sd(table: pd.DataFrame, label: str) -> dict:
    row = {"": label}
    for metric in METRICS:
        if metric in table and table[metric].notna().any():
            per_image = table.groupby("image")[metric].mean()
            row[metric] = f"{per_image.mean():.4f} ± {per_image.std(ddof=0):.4f}"
        else:
            row[metric] = "n/a"
    return row


def metrics_table(staging: Path) -> pd.DataFrame:
    """Model at the validation threshold and at 0.5, and the second observer where there is one."""
    per_image = pd.read_csv(staging / artifacts.PER_IMAGE, dtype={"image": str})
    fixed = [m for m in METRICS if f"{m}_at_0.5" in per_image]
    at_fixed = per_image.drop(columns=fixed).rename(columns={f"{m}_at_0.5": m for m in fixed})
    threshold = per_image["threshold"].mean()
    rows = [_mean_sd(per_image, f"model (threshold {threshold:.3f}, chosen on validation)"),
            _mean_sd(at_fixed, "model (threshold 0.5)")]
    observer = staging / artifacts.SECOND_OBSERVER
    if observer.is_file():
        rows.append(_mean_sd(pd.read_csv(observer, dtype={"image": str}), "2nd human observer"))
    return pd.DataFrame(rows)


def split_table(split: dict) -> pd.DataFrame:
    """Images per split; and patients per split where the dataset names them (split.json's `patients`)."""
    patients = split.get("patients", {})
    return pd.DataFrame([{"split": name, "images": len(split[name]),
                          **({"patients": len({patients[s] for s in split[name]})} if patients else {}),
                          "stems": " ".join(split[name])} for name in SPLITS])


def run_sections(staging: Path, cfg: DictConfig) -> List[Section]:
    """The sections of a training or evaluation run's report, from what it staged."""
    sections = [Section("Config that differs from the defaults", table=config_changes(cfg))]
    if (staging / artifacts.SPLIT).is_file():
        sections.append(Section("Data split", table=split_table(json.loads((staging / artifacts.SPLIT).read_text()))))
    sections.append(Section("Test metrics", "Inside the field of view, per image at native resolution; "
                            "mean ± sd over test images.", table=metrics_table(staging)))
    for title, image in (("Training curves", artifacts.CURVES),
                         ("ROC and precision-recall curves", artifacts.ROC_PR),
                         ("Worst and best test images by F1", artifacts.BEST_WORST)):
        if (staging / image).is_file():
            sections.append(Section(title, image=image))
    if (staging / artifacts.LESION_PR).is_file():
        sections += lesion_sections(staging)
    per_image = pd.read_csv(staging / artifacts.PER_IMAGE, dtype={"image": str})
    columns = ["image", "channel", *[m for m in METRICS if m in per_image]]
    sections.append(Section("Per-image test metrics", table=per_image[columns].round(4)))
    return sections


def lesion_sections(staging: Path) -> List[Section]:
    """A lesion run's figures for a grader: precision-recall per lesion with the challenge's pooled AUPR, and the
    overlays (ground truth | prediction) of the best and worst test images by their mean AUPR over lesions."""
    per_image = pd.read_csv(staging / artifacts.PER_IMAGE, dtype={"image": str})
    ranked = per_image.groupby("image")["aupr"].mean().dropna().sort_values()  # lesions an image lacks: no AUPR
    sections = [Section("Precision-recall per lesion", "Pooled over the test images that have each lesion "
                        "(the IDRiD challenge's protocol).", image=artifacts.LESION_PR)]
    for label, name in (("Best", ranked.index[-1]), ("Worst", ranked.index[0])) if len(ranked) else ():
        overlay = f"{artifacts.LESIONS}/{name}.png"
        if (staging / overlay).is_file():
            sections.append(Section(f"{label} test image by mean AUPR over lesions: {name} "
                                    f"({ranked[name]:.3f})", image=overlay))
    return sections


def fold_columns(folds: pd.DataFrame) -> pd.DataFrame:
    shown = folds[["fold", "run_id", *[c for c in folds if c.startswith("n_")], *[c for c in SHOWN if c in folds]]]
    return shown.assign(run_id=shown["run_id"].str[:8]).round(4)


def cv_sections(staging: Path, cfg: DictConfig) -> List[Section]:
    """A cross-validation parent's report: the folds compared, their splits, the folds' joint test metrics."""
    record = json.loads((staging / artifacts.CV_SPLIT).read_text())
    folds = pd.read_csv(staging / artifacts.FOLD_TABLE)
    stats = folds.drop(columns=["fold", "run_id", *[c for c in folds if c.startswith("n_")]])
    summary = pd.DataFrame([{"metric": c, "mean over folds": stats[c].mean(), "sd over folds": stats[c].std(ddof=1)}
                            for c in stats]).round(4)
    splits = pd.DataFrame([{"fold": k, **{f"n_{name}": len(split[name]) for name in SPLITS},
                            f"held-out ({record['held_out_fold_is']})": " ".join(split[record["held_out_fold_is"]])}
                           for k, split in enumerate(record["splits"])])
    joint = ("the folds' averaged probabilities (ensemble) on the official test split" if record["official_test"]
             else "out-of-fold: every image scored by the one fold model that never saw it")
    sections = [Section("Config that differs from the defaults", table=config_changes(cfg)),
                Section("Folds", f"{record['folds']} folds, seed {record['seed']}, a patient's images in one fold, "
                        "stratified by subgroup where the dataset has one; full lists in cv_split.json.",
                        table=splits),
                Section("Test metrics per fold", "All columns in folds.csv.", table=fold_columns(folds)),
                Section("Mean and sd over folds", table=summary),
                Section("Test metrics of the folds together", f"Computed {joint}; mean ± sd over images.",
                        table=metrics_table(staging))]
    for title, image in (("ROC and precision-recall curves", artifacts.ROC_PR),
                         ("Worst and best test images by F1", artifacts.BEST_WORST)):
        if (staging / image).is_file():
            sections.append(Section(title, image=image))
    return sections


def comparison_sections(table: pd.DataFrame, label: str, metric: str, images: List[str]) -> List[Section]:
    """A sweep's (or an experiment's) report: the comparison table and its figures."""
    return [Section(f"Runs of {label}, sorted by {metric}", table=table.drop(columns=["run_id"]).round(4)),
            *[Section(Path(image).stem.replace("_", " "), image=image) for image in images]]


def write_report(staging: Path, title: str, sections: List[Section]) -> None:
    """`report.md` and `report.html` in `staging`."""
    markdown, body = [f"# {title}\n"], [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        markdown.append(f"## {section.title}\n")
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            markdown.append(section.text + "\n")
            body.append(f"<p>{html.escape(section.text)}</p>")
        if section.table is not None:
            markdown.append((section.table.to_markdown(index=False) if len(section.table) else "(none)") + "\n")
            body.append(section.table.to_html(index=False, border=0, na_rep="") if len(section.table)
                        else "<p>(none)</p>")
        if section.image:
            markdown.append(f"![{section.title}]({section.image})\n")
            encoded = base64.b64encode((staging / section.image).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(section.title)}" src="data:image/png;base64,{encoded}">')
    (staging / artifacts.REPORT_MD).write_text("\n".join(markdown))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")
    (staging / artifacts.REPORT_HTML).write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
                                         f"{html.escape(title)}</title><style>{style}</style></head><body>\n"
                                         + "\n".join(body) + "\n</body></html>\n")
