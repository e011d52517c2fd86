"""`python -m retina_seg.promote sweep=<id> [metric=val_f1]`: the best run of a sweep becomes the champion.

The sweep is looked for in `tracking.experiment` only (sweep ids are folder date-times: two users can share one).

Registers the run's logged pyfunc model as a new version of `model_name` in the tracking store's
registry and points the alias `alias` (default `champion`) at it. Serve it with
`retina-seg-serve models:/retina-seg@champion` (or `mlflow models serve -m models:/retina-seg@champion
--env-manager local -h 127.0.0.1 -p 5001`, without the request guard).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina_seg.cli import run_app, user_errors
from retina_seg.config import PromoteConfig, validate
from retina_seg.serve.registry import promote
from retina_seg.tracking.runs import check_tracking


@hydra.main(config_path="conf", config_name="promote", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    config: PromoteConfig = validate(cfg)
    check_tracking(config.tracking)
    done = promote(config)
    uri = f"models:/{config.model_name}@{config.alias}"
    print(f"{config.model_name} version {done.version} is run {done.run.info.run_id} ({config.metric}="
          f"{done.value:.4f}, the best of sweep {config.sweep}); {uri} points at it. Serve it with\n"
          f"  retina-seg-serve {uri} --host 127.0.0.1 --port 5001")

if __name__ == "__main__":
    run_app(main)
