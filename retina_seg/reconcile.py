"""`python -m retina_seg.reconcile [tracking=server] [all_experiments=true]`: tidy up after crashes.

A job killed with SIGKILL, by the OOM killer or a power cut cannot mark its run; it stays RUNNING
forever. This marks such runs KILLED (they keep their last checkpoint, see `run resume=<id>`) and
prints one line per change; running it again changes nothing. `run` does the same for its own
host's runs when it starts.
"""

from __future__ import annotations

import hydra
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from retina_seg.cli import run_app, user_errors
from retina_seg.config import ConfigError, ReconcileConfig, validate
from retina_seg.tracking.recovery import reconcile
from retina_seg.tracking.runs import check_tracking


def reconcile_store(config: ReconcileConfig) -> list[str]:
    check_tracking(config.tracking)
    client = MlflowClient(config.tracking.uri)
    if config.all_experiments:
        experiments = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(config.tracking.experiment)
        if found is None:
            raise ConfigError(f"tracking.experiment={config.tracking.experiment!r} does not exist in this store "
                              "(all_experiments=true looks at every experiment)")
        experiments = [found.experiment_id]
    return reconcile(client, experiments, config.stale_minutes)


@hydra.main(config_path="conf", config_name="reconcile", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    changes = reconcile_store(validate(cfg))
    print("\n".join(changes) if changes else "reconcile: every RUNNING run still has its process; nothing changed")


if __name__ == "__main__":
    run_app(main)
