"""Every file a run logs, named once. The names are a contract with users, who script against them
(`<BACKBONE>_Retinal.json` + `.h5` reload with `model_from_json` + `load_weights`): every module that writes
or reads a run's files takes its names from here.

Paths are relative to a run's artifact root, which is also the layout of a job's staging folder
(`<hydra output folder>/artifacts`) before it is logged.
"""

from __future__ import annotations

from pathlib import Path

STAGING = "artifacts"  # a job's folder of files to log, inside its Hydra output folder
SUFFIX = "_Retinal"


def stem(backbone: str) -> str:
    """`<BACKBONE>_Retinal`: the stem of the model's three files, the backbone as selected (e.g. resnet34)."""
    return f"{backbone}{SUFFIX}"


def architecture(backbone: str) -> str:
    return f"{stem(backbone)}.json"  # Keras model JSON, float32 policies (reloads at any precision)


def weights(backbone: str) -> str:
    return f"{stem(backbone)}.h5"  # the best epoch's weights, no optimizer state


def history(backbone: str) -> str:
    return f"{stem(backbone)}.csv"  # one row per epoch: Keras' logs and the validation scores


CONFIG = "config.yaml"  # the resolved config the run was trained with: what `resume=`, reload and serving read
SPLIT = "split.json"  # image stems per split
CV_SPLIT = "cv_split.json"  # a cross-validation parent: every fold's split, seed and subgroups
AUGMENTATION = "augmentation.yaml"  # the resolved albumentations pipeline (only with transforms)
CURVES = "curves.png"  # training curves (and .svg)
PER_IMAGE = "metrics/per_image.csv"  # test metrics per image and channel
SUMMARY = "metrics/summary.json"  # test metrics and the validation thresholds (`threshold`, `threshold_<class>`)
SECOND_OBSERVER = "metrics/second_observer.csv"  # the second human observer, scored like the model
# per validation image, the field-of-view and predicted foreground fractions a served model is compared with
VALIDATION_STATISTICS = "metrics/validation_statistics.json"
TEST_EXAMPLES = "test_examples.png"  # image | prediction | error map of the first test images
EXAMPLES = "examples"  # full-resolution error maps, <image>_errors.png
ROC_PR = "figures/roc_pr.png"  # pooled ROC and precision-recall curves
BEST_WORST = "figures/best_worst.png"  # error maps of the best and worst test images
LESION_PR = "figures/lesion_pr.png"  # lesion runs: precision-recall per lesion, pooled AUPR in the legend
LESIONS = "lesions"  # lesion overlays, one <image>.png per test image
REPORT_MD, REPORT_HTML = "report.md", "report.html"
MODEL_CARD = "MODEL_CARD.md"  # what the model is for and not for, its data and figures; also inside the model
FOLD_TABLE, FOLD_TABLE_MD = "folds.csv", "folds.md"  # a cross-validation parent's per-fold metrics
CROSS_DATASET = "cross_dataset"  # .csv (long form), .md (matrices), .png (F1 heatmap)
COMPARISON = "comparison"  # a comparison run's .csv and .md
COMPARISON_FIGURES = ("comparison_bar.png", "validation_curves.png")
FOV_WIDTH = "fov_width_px"  # a key of SUMMARY and a run metric: the training images' median FOV width (pixels)
MODEL = "model"  # the logged MLflow pyfunc model, the whole inference path (serve/pyfunc.py)
FOLDS = "folds"  # inside a served fold ensemble: folds/fold<k>/ with one model each


def staging(job_folder: Path) -> Path:
    """Where a job stages the files it logs."""
    return job_folder / STAGING


def fold_folder(root: Path, fold: int) -> Path:
    return root / FOLDS / f"fold{fold}"
