"""Hydra callback for multiruns: check every job's config before the first one trains.

Without it a sweep over `image_size=64,100` would train the first job for an hour and only then
reject the second. It also creates the tracking store and experiment once, before parallel jobs
(joblib) race to create the same SQLite tables.
"""

from __future__ import annotations

import logging
import sys

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from retina_seg.config import refuse_overridden_smoke_trainer, validate
from retina_seg.errors import USER_ERROR, UserError
from retina_seg.tracking.runs import check_tracking, ensure_experiment

log = logging.getLogger(__name__)


def job_overrides(config: DictConfig) -> tuple[list[list[str]], set[str]] | None:
    """The override lists of every job a basic sweep will launch, and the swept keys (None for other
    sweepers, e.g. Optuna, whose values are drawn as the search goes)."""
    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return None
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    swept = {o.get_key_element() for o in parsed if o.is_sweep_override()}
    return [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch], swept


class ValidateSweep(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        jobs, swept = job_overrides(config) or ([list(config.hydra.overrides.task)], set())
        try:
            for overrides in jobs:
                composed = compose(config_name=config.hydra.job.config_name, overrides=list(overrides),
                                   return_hydra_config=True)
                refuse_overridden_smoke_trainer(composed.trainer, composed.hydra.runtime.choices,
                                                list(config.hydra.overrides.task))  # the command to name
                with open_dict(composed):
                    del composed["hydra"]
                job = validate(composed)
            check_tracking(job.tracking)
            ensure_experiment(job.tracking)
        except UserError as exc:
            values = " ".join(o for o in overrides if o.lstrip("+~").split("=")[0] in swept)
            print(f"error: sweep job {values}: {exc}", file=sys.stderr)
            sys.exit(USER_ERROR)
        log.info("sweep: %d job(s) checked", len(jobs))
