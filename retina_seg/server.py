"""`python -m retina_seg.server [action=stop] [auth=true]`: a team's tracking server (what `make server` runs).

Starts PostgreSQL in `folder` (created on first use) and `mlflow server` on it with proxied artifacts,
then returns; `action=stop` stops both. Point clients at it with `MLFLOW_TRACKING_URI=<printed uri>`
and `tracking=server`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from retina_seg.cli import run_app, user_errors
from retina_seg.config import ServerAction, ServerConfig, validate
from retina_seg.team_server import ADMIN, TeamServer


def describe(server: TeamServer) -> str:
    """What a user needs to know after a start, without printing any secret."""
    config = server.config
    lines = [f"tracking server {server.uri} (PostgreSQL 127.0.0.1:{config.db_port}, data in {server.folder})",
             f"  export MLFLOW_TRACKING_URI={server.uri}   then: python -m retina_seg.run tracking=server"]
    if config.auth:
        lines.append(f"  accounts on: admin user '{ADMIN}', password in $MLFLOW_AUTH_ADMIN_PASSWORD or "
                     f"{server.folder / 'admin_password'}; clients set MLFLOW_TRACKING_USERNAME/PASSWORD")
    lines.append(f"  logs: {server.folder / 'mlflow.log'}, {server.data / 'postgres.log'}; stop: make server-stop")
    return "\n".join(lines)


@hydra.main(config_path="conf/apps/server", config_name="server", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    config: ServerConfig = validate(cfg)
    server = TeamServer(config)
    if config.action is ServerAction.stop:
        server.stop()
        print(f"stopped the tracking server and PostgreSQL of {server.folder}")
    else:
        server.start()
        print(describe(server))


if __name__ == "__main__":
    run_app(main)
