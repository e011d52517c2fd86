"""A team's tracking server: PostgreSQL in a project folder and `mlflow server` on it, started and stopped.

Both listen on the configured host (127.0.0.1 by default). Secrets never reach a command line, where
`ps` would show them: the database password lives in a mode-600 pgpass file that libpq reads
(PGPASSFILE), the backend URI given to MLflow carries no password, and the basic-auth admin password
reaches MLflow through its environment. PostgreSQL refuses to run as root, so as root it runs as the
`postgres` user. The MLflow server runs in its own process group, so stopping it stops every worker; its PID
file records the process's start time and command line, so a pid the kernel has since given to another
process is never signalled.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from retina_seg.config import ServerConfig
from retina_seg.errors import UserError
from retina_seg.tracking.runs import process_command, process_started, still_running

DB_ROLE = "mlflow"
DB_NAMES = ("mlflow", "mlflow_auth")  # runs, metrics, registry / accounts of the basic-auth app
ADMIN = "admin"

log = logging.getLogger(__name__)


class ServerError(UserError):
    """The server cannot be started or stopped; the message says why and what to do."""


def postgres_bin() -> Path:
    """The folder holding initdb/pg_ctl: the newest /usr/lib/postgresql/<version>/bin, else the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        raise ServerError("PostgreSQL is not installed (no initdb): `make postgres` installs it "
                          "(apt-get install postgresql, as root)")
    return Path(initdb).parent


def secret(env: str, file: Path) -> str:
    """A password from environment variable `env`, else from `file` (mode 600, generated on first use)."""
    if os.environ.get(env):
        return os.environ[env]
    if not file.exists():
        file.touch(mode=0o600)
        file.write_text(secrets.token_urlsafe(24))
    if stat.S_IMODE(file.stat().st_mode) & 0o077:
        raise ServerError(f"{file} is readable by others: `chmod 600 {file}`")
    return file.read_text().strip()


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


class TeamServer:
    """The database and the tracking server described by a ServerConfig, each startable on its own
    (tests restart the tracking server alone)."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.folder = Path(config.folder).resolve()
        self.data = self.folder / "postgres"
        self.pid_file = self.folder / "mlflow.pid"
        self.uri = f"http://{config.host}:{config.port}"

    # --- PostgreSQL -------------------------------------------------------------------------------------
    def _as_postgres(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program, as user `postgres` when we are root (initdb and postgres refuse root)."""
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, str(postgres_bin() / args[0]), *args[1:]], capture_output=True, text=True,
                              **kwargs)
        if done.returncode != 0:
            raise ServerError(f"{args[0]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
        return done

    def _prepare_data_folder(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        self.folder.chmod(self.folder.stat().st_mode | 0o055)  # postgres must reach <folder>/postgres
        for parent in self.folder.parents:
            if not parent.stat().st_mode & 0o001:
                raise ServerError(f"PostgreSQL runs as user postgres, which cannot enter {parent}: "
                                  "choose a server folder below world-traversable folders")
        self.data.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(self.data, "postgres", "postgres")

    def database_running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and subprocess.run(
            [str(postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.config.db_port)],
            capture_output=True).returncode == 0

    def start_database(self) -> None:
        """Create the cluster on first use, start it on 127.0.0.1:db_port, and make sure the role and the
        databases exist with the current password."""
        if not (self.data / "PG_VERSION").exists():
            self._prepare_data_folder()
            self._as_postgres("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                              "--auth-local=trust", "--auth-host=scram-sha-256", "--no-instructions")
        if not self.database_running():
            options = (f"-c listen_addresses=127.0.0.1 -p {self.config.db_port} "
                       f"-c unix_socket_directories={self.data} -c max_connections=200")
            self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.data / "postgres.log"), "-o", options,
                              "-w", "-t", "60", "start")
        self._ensure_role()

    def _ensure_role(self) -> None:
        """The MLflow role and its databases; the password travels in the protocol, never on a command line
        (local admin connections use the socket inside the data folder, mode 700)."""
        import psycopg2
        from psycopg2 import sql

        password = secret("RETINA_SEG_DB_PASSWORD", self.folder / "db_password")
        connection = psycopg2.connect(host=str(self.data), port=self.config.db_port, user="postgres",
                                      dbname="postgres")
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_ROLE,))
                verb = "ALTER" if cursor.fetchone() else "CREATE"
                cursor.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(DB_ROLE)),
                               (password,))
                for name in DB_NAMES:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if not cursor.fetchone():
                        cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name),
                                                                                     sql.Identifier(DB_ROLE)))
        finally:
            connection.close()
        escaped = password.replace("\\", "\\\\").replace(":", "\\:")
        _write_private(self.folder / "pgpass", f"127.0.0.1:{self.config.db_port}:*:{DB_ROLE}:{escaped}\n")

    def database_uri(self, name: str = "mlflow") -> str:
        """A SQLAlchemy URI without password: libpq takes it from the pgpass file."""
        return f"postgresql+psycopg2://{DB_ROLE}@127.0.0.1:{self.config.db_port}/{name}"

    def stop_database(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    # --- MLflow -----------------------------------------------------------------------------------------
    def _environment(self) -> dict:
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": self.database_uri(),
               "PGPASSFILE": str(self.folder / "pgpass")}
        if self.config.auth:
            ini = self.folder / "basic_auth.ini"
            ini.write_text("[mlflow]\n"
                           f"default_permission = {self.config.default_permission.value}\n"
                           f"database_uri = {self.database_uri('mlflow_auth')}\n"
                           f"admin_username = {ADMIN}\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
            env |= {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
                    "MLFLOW_AUTH_ADMIN_PASSWORD": secret("MLFLOW_AUTH_ADMIN_PASSWORD", self.folder / "admin_password"),
                    # signs the UI's CSRF tokens; stable across restarts so open browser sessions stay valid
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": secret("MLFLOW_FLASK_SERVER_SECRET_KEY",
                                                             self.folder / "flask_secret_key")}
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(key, None)  # the server's own clients must not act as a user
        return env

    def tracking_pid(self) -> int | None:
        """The running server's process (group) id, or None. The PID file records the process's start time and
        command line too: once the server is gone the kernel may give its pid to any other process, so a file
        whose pid no longer names that same process is stale, and is removed with one line saying so."""
        if not self.pid_file.exists():
            return None
        try:
            record = json.loads(self.pid_file.read_text())
            pid, started, command = int(record["pid"]), str(record["started"]), str(record["command"])
        except (OSError, ValueError, KeyError, TypeError):  # unreadable, or a bare pid (no identity to check)
            pid = None
        if pid is not None and still_running(pid, started, command):
            return pid
        why = "no process identity in it" if pid is None else f"process {pid} is not the tracking server it started"
        log.warning("removed the stale %s (%s)", self.pid_file, why)
        self.pid_file.unlink(missing_ok=True)
        return None

    def _record_tracking(self, pid: int) -> None:
        """Write the PID file: the pid and what identifies its process (start time, command line)."""
        self.pid_file.write_text(json.dumps({"pid": pid, "started": process_started(pid),
                                             "command": process_command(pid)}))

    def start_tracking(self, timeout: float = 300) -> str:
        """Start `mlflow server` on the database (in its own process group) and wait until it answers
        (about 15 s on an idle machine, minutes on a saturated one)."""
        if self.tracking_pid():
            raise ServerError(f"a tracking server from {self.folder} is running already (pid "
                              f"{self.tracking_pid()}): `make server-stop` first")
        destination = self.config.artifacts_destination or str(self.folder / "artifacts")
        args = [sys.executable, "-m", "mlflow", "server", "--host", self.config.host, "--port",
                str(self.config.port), "--workers", str(self.config.workers), "--serve-artifacts",
                "--artifacts-destination", destination, *(["--app-name", "basic-auth"] if self.config.auth else []),
                # uvicorn restarts a worker that misses a 5 s health ping: on a saturated machine, every one in turn
                *(["--uvicorn-opts", "--timeout-worker-healthcheck 60"] if self.config.workers > 1 else [])]
        output = open(self.folder / "mlflow.log", "a")
        server = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=self._environment(), cwd=self.folder)
        output.close()
        self._record_tracking(server.pid)  # Popen returns once the child has exec'd: its command line is final
        deadline = time.time() + timeout
        while not self._healthy():
            if server.poll() is not None or time.time() > deadline:
                self.stop_tracking()
                tail = (self.folder / "mlflow.log").read_text()[-1500:]
                raise ServerError(f"mlflow server did not start (log {self.folder / 'mlflow.log'}):\n{tail}")
            time.sleep(0.5)
        return self.uri

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop_tracking(self) -> None:
        """Stop the server's whole process group (its workers too)."""
        pid = self.tracking_pid()  # None unless the PID file names the very process that start_tracking started
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
                deadline = time.time() + 15
                while time.time() < deadline and self._group_alive(pid):
                    time.sleep(0.2)
                if self._group_alive(pid):
                    os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended on its own meanwhile
                pass
        self.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _group_alive(pid: int) -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap our own child, if it is one
        except ChildProcessError:
            pass
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        return True

    # --- both -------------------------------------------------------------------------------------------
    def start(self) -> str:
        self.start_database()
        return self.start_tracking()

    def stop(self) -> None:
        self.stop_tracking()
        self.stop_database()
