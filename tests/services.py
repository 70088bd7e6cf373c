"""Services the cluster tests start on this machine and stop by PID.

* a single-node SLURM cluster with job accounting: munge (authentication), MariaDB (the
  accounting database), slurmdbd, slurmctld and slurmd, one node with this machine's cores and
  one GPU declared as a generic resource (gres), so that a job asking for a GPU is scheduled and
  accounted as on a GPU cluster (the "device" is /dev/null: nothing here runs on it);
* a PostgreSQL server on loopback (the backend store of a shared MLflow server).

They need Debian's packages (`.ci/run` installs them) and, for slurmd, root. Where something is
missing, the test skips with one line saying what; under CI (CI=true) it fails instead, so CI
never silently skips a cluster test.

Why /etc/slurm: the Snakemake job-step plugin removes every SLURM_* variable (SLURM_CONF
included) before its nested `srun`, so `srun` inside a job only finds a configuration at the
default path, as on real clusters. The cluster writes its three files there while it runs and
removes them afterwards; it refuses to start over a configuration it did not write.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SLURM_DIR = Path("/etc/slurm")
MARK = "# written by multimix tests/services.py for a test cluster; removed when it stops\n"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # the default: the job-step's srun finds no other


def unavailable(reason: str) -> None:
    """Skip with one line, or fail under CI: CI never silently skips a service test."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test, but {reason}", pytrace=False)
    pytest.skip(reason)


def require(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (Debian packages; .ci/run installs them)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = 60, log: Path | None = None, process=None) -> None:
    """Until `check()` holds; fails after `timeout`, or at once when `process` has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.25)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    ended = f" (it exited with {process.returncode})" if process is not None and process.poll() is not None else ""
    raise AssertionError(f"{what} did not come up within {timeout:.0f} s{ended}\n{tail}")


def pid_from(path: Path, timeout: float = 30) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip(), f"pid file {path}", timeout)
    return int(path.read_text().split()[0])


@dataclass
class Daemons:
    """PIDs of what we started, stopped in reverse order (SIGTERM, then SIGKILL)."""

    started: list[tuple[str, int, int]] = field(default_factory=list)

    def add(self, name: str, pid: int, stop_signal: int = signal.SIGTERM) -> None:
        self.started.append((name, pid, stop_signal))

    def stop(self) -> None:
        for name, pid, stop_signal in reversed(self.started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, stop_signal)
            deadline = time.time() + 30
            while time.time() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.started.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie child of ours counts as gone
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


# ------------------------------------------------------------------ MariaDB (slurmdbd's store)
def start_mariadb(folder: Path, daemons: Daemons) -> int:
    require("mariadb-install-db", "mariadbd", "mariadb")
    data, sock = folder / "mariadb", folder / "mariadb.sock"
    run("mariadb-install-db", f"--datadir={data}", "--user=root", "--auth-root-authentication-method=normal",
        "--skip-test-db")
    port = free_port()
    subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={data}", "--user=root", "--bind-address=127.0.0.1",
                      f"--port={port}", f"--socket={sock}", f"--pid-file={folder / 'mariadb.pid'}",
                      f"--log-error={folder / 'mariadb.log'}", "--skip-name-resolve"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemons.add("mariadbd", pid_from(folder / "mariadb.pid"))
    wait_for(sock.exists, "MariaDB", log=folder / "mariadb.log")
    run("mariadb", "--no-defaults", "-S", str(sock), "-uroot", "-e",
        "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
    return port


# ------------------------------------------------------------------ munge
def munge_works() -> bool:
    if not MUNGE_SOCKET.exists():
        return False
    token = subprocess.run(["munge", "-n"], capture_output=True)
    return token.returncode == 0 and subprocess.run(["unmunge"], input=token.stdout,
                                                    capture_output=True).returncode == 0


def start_munge(folder: Path, daemons: Daemons) -> None:
    """Use the machine's munged where one answers, else start one with a fresh key."""
    require("munged", "munge", "unmunge")
    if munge_works():
        return
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    run("munged", "--force", f"--key-file={key}", f"--pid-file={folder / 'munged.pid'}",
        f"--log-file={folder / 'munged.log'}", f"--seed-file={folder / 'munge.seed'}")
    daemons.add("munged", pid_from(folder / "munged.pid"))
    wait_for(munge_works, "munged", log=folder / "munged.log")


# ------------------------------------------------------------------ SLURM
@dataclass
class Cluster:
    name: str
    partition: str
    folder: Path

    def squeue(self) -> str:
        return run("squeue", "--states=all", "--format=%.6i %.45k %.10T %.8M").stdout

    def sacct(self) -> str:
        """One line per job (no steps): id, Snakemake's comment (rule and wildcards), state, time, resources."""
        return run("sacct", "-X", "--starttime=now-1days",
                   "--format=JobID,Comment%45,State,Elapsed,AllocTRES%45").stdout


def _write_config(name: str, text: str, mode: int = 0o644) -> Path:
    path = SLURM_DIR / name
    path.write_text(MARK + text)
    path.chmod(mode)
    return path


@contextlib.contextmanager
def slurm_cluster(folder: Path):
    """A running single-node cluster with accounting; everything stopped and removed on exit."""
    require("slurmctld", "slurmd", "slurmdbd", "sacctmgr", "sbatch", "squeue", "sacct")
    if os.geteuid() != 0:
        unavailable("slurmd needs root on this single-node test cluster")
    ours = [SLURM_DIR / n for n in ("slurm.conf", "slurmdbd.conf", "gres.conf")]
    for path in ours:
        if path.exists() and not path.read_text().startswith(MARK):
            unavailable(f"{path} exists and was not written by this test: not touching a real cluster's configuration")
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    # at least 4 CPUs declared (slurmd takes the configured count: config_overrides): a job group of
    # two 2-core trainings (cluster.trainings_per_gpu) fits on a 2-core CI machine
    cpus, memory = max(4, os.cpu_count() or 1), _memory_mb()
    name, partition = "multimix-test", "main"
    daemons = Daemons()
    try:
        db_port = start_mariadb(folder, daemons)
        start_munge(folder, daemons)
        ctld_port, slurmd_port, dbd_port = free_port(), free_port(), free_port()
        _write_config("slurmdbd.conf", f"""AuthType=auth/munge
DbdHost=localhost
DbdPort={dbd_port}
SlurmUser=root
LogFile={folder}/slurmdbd.log
PidFile={folder}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
""", mode=0o600)
        _write_config("gres.conf", "Name=gpu Count=1 File=/dev/null\n")
        _write_config("slurm.conf", f"""ClusterName={name}
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
SlurmdParameters=config_overrides
NodeName={host} CPUs={cpus} RealMemory={memory} Gres=gpu:1 State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        run("slurmdbd")
        daemons.add("slurmdbd", pid_from(folder / "slurmdbd.pid"))
        wait_for(lambda: subprocess.run(["sacctmgr", "-n", "list", "cluster"], capture_output=True).returncode == 0,
                 "slurmdbd", log=folder / "slurmdbd.log")
        run("sacctmgr", "-i", "add", "cluster", name)
        run("slurmctld")
        daemons.add("slurmctld", pid_from(folder / "slurmctld.pid"))
        run("slurmd")
        daemons.add("slurmd", pid_from(folder / "slurmd.pid"))
        wait_for(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                                                  text=True).stdout, "the node", log=folder / "slurmctld.log")
        yield Cluster(name=name, partition=partition, folder=folder)
    finally:
        daemons.stop()
        for path in ours:
            if path.exists() and path.read_text().startswith(MARK):
                path.unlink()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 512  # slurmd refuses a node that claims more than it has
    return 1024


# ------------------------------------------------------------------ PostgreSQL
def _as_postgres() -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pg_bin(program: str) -> str:
    found = shutil.which(program)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"))  # Debian keeps them off PATH
    if not versions:
        unavailable(f"PostgreSQL's {program} not installed (Debian package postgresql; .ci/run installs it)")
    return str(versions[-1])


@contextlib.contextmanager
def postgres(folder: Path, database: str = "mlflow", also: tuple[str, ...] = ()):
    """A PostgreSQL server on 127.0.0.1 with `database` (and the databases `also` names, at the
    same address); yields the SQLAlchemy URI of `database`."""
    initdb, pg_ctl, createdb = _pg_bin("initdb"), _pg_bin("pg_ctl"), _pg_bin("createdb")
    folder.mkdir(parents=True, exist_ok=True)
    # Its own folder in /tmp: as root the server runs as `postgres`, who cannot enter pytest's folders.
    home = Path(tempfile.mkdtemp(prefix="multimix-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
    prefix, port, data, log = _as_postgres(), free_port(), home / "data", home / "postgres.log"
    daemons = Daemons()
    try:
        run(*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust")
        run(*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-o", f"-p {port} -k {home} -h 127.0.0.1",
            "start")
        daemons.add("postgres", pid_from(data / "postmaster.pid"), signal.SIGINT)  # SIGINT: the fast shutdown
        for name in (database, *also):
            run(*prefix, createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        daemons.stop()
        if log.exists():
            shutil.copy(log, folder / "postgres.log")
        shutil.rmtree(home, ignore_errors=True)


# ------------------------------------------------------------------ MLflow tracking server
@dataclass(frozen=True)
class Tracking:
    """A running MLflow server: its URI and, with authentication, the admin's credentials."""

    uri: str
    admin: tuple[str, str] | None = None

    def env(self, user: tuple[str, str] | None = None) -> dict:
        """Environment of a client: the URI and (the admin's, or `user`'s) credentials."""
        env = dict(os.environ, MLFLOW_TRACKING_URI=self.uri)
        name, password = user or self.admin or (None, None)
        if name:
            env |= {"MLFLOW_TRACKING_USERNAME": name, "MLFLOW_TRACKING_PASSWORD": password}
        return env


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_uri: str, auth_uri: str | None = None):
    """`mlflow server` on loopback with `backend_uri` as its store and a folder as the artifact
    root (on a cluster: a path every node reaches); yields a `Tracking`. With `auth_uri` (the
    user database) it runs MLflow's basic-auth app with a random, non-default admin password and
    READ as every user's default permission, as docs/cluster.md sets up a lab's server."""
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "mlflow-server.log"
    command = ["mlflow", "server", "--backend-store-uri", backend_uri, "--artifacts-destination",
               (folder / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    env, admin = dict(os.environ), None
    if auth_uri:
        admin = ("admin", secrets.token_urlsafe(18))
        config = folder / "basic_auth.ini"
        config.write_text("[mlflow]\ndefault_permission = READ\n"
                          f"database_uri = {auth_uri}\nadmin_username = {admin[0]}\nadmin_password = {admin[1]}\n"
                          "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        config.chmod(0o600)
        env |= {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        command += ["--app-name", "basic-auth"]
    # its own session: SIGTERM to the group stops the server and its workers together
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(f"{uri}/health"), "mlflow server", timeout=180, log=log, process=proc)
        yield Tracking(uri, admin)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def add_mlflow_user(server: Tracking, name: str) -> tuple[str, str]:
    """A user of an authenticated server (made by its admin), with a random password."""
    password = secrets.token_urlsafe(18)
    status, body = request(f"{server.uri}/api/2.0/mlflow/users/create", server.admin,
                           {"username": name, "password": password})
    if status != 200:
        raise RuntimeError(f"creating MLflow user {name}: {status} {body}")
    return name, password


def request(url: str, user: tuple[str, str] | None = None, payload: dict | None = None,
            method: str | None = None) -> tuple[int, str]:
    """(status, body) of an HTTP request with optional basic-auth credentials and JSON body."""
    import base64
    import json
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def answers(url: str) -> bool:
    """Whether `url` answers 200 now (a health check for wait_for; refused or slow = not yet)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
