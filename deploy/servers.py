"""The real servers of the scaled topology, from Debian's packages, on loopback: PostgreSQL, Redis, nginx.

Used three ways:
- `make run-scaled` (deploy/Procfile): `python -m deploy.servers prepare` creates the data folders
  and the nginx configuration once, then honcho runs each server in the foreground
  (`python -m deploy.servers postgres|nginx` exec the real binaries, so signals reach them;
  `redis` stays as Redis's parent, to stop it after its clients: `run_redis_last`);
- `make test`: `python -m deploy.servers with -- <command>` starts PostgreSQL and Redis in a
  temporary folder on free ports, runs the command with DATABASE_URL and TEST_REDIS_URL set, and
  stops both by process id, whatever the command's outcome;
- the topology tests and benchmarks import `start_postgres`, `start_redis`.

PostgreSQL refuses to run as root: as root, its data folder belongs to (and the server runs as)
the unprivileged `postgres` account (or `nobody`), through setpriv.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Debian's package names for the servers, by the binary that says one is missing.
PACKAGES = {"postgres": "postgresql", "redis-server": "redis-server", "nginx": "nginx"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder (Debian keeps each major version apart)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def missing_packages() -> list[str]:
    missing = [] if postgres_bin() else ["postgresql"]
    missing += [PACKAGES[name] for name in ("redis-server", "nginx") if not shutil.which(name) and not Path(f"/usr/sbin/{name}").exists()]
    return missing


def _server_user() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as when we are root; None when we are not (it runs as us)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL")


def _as_server_user(command: list[str]) -> list[str]:
    user = _server_user()
    if user is None:
        return command
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *command]


def _give_to_server_user(*paths: Path) -> None:
    user = _server_user()
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)


def init_postgres(data: Path, socket_dir: Path) -> None:
    """A new cluster in `data` (once), trusting loopback and its socket only: it listens nowhere else."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (Debian package: postgresql)")
    _give_to_server_user(socket_dir)
    if (data / "PG_VERSION").exists():
        return
    _give_to_server_user(data)
    command = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-instructions"]
    subprocess.run(_as_server_user(command), check=True, stdout=subprocess.DEVNULL)


def postgres_command(data: Path, socket_dir: Path, port: int, *, durable: bool = True) -> list[str]:
    bin_dir = postgres_bin()
    assert bin_dir is not None
    command = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(socket_dir)]
    # Enough backends for two web processes' pools, the workers and the tests.
    command += ["-c", "max_connections=200", "-c", "shared_buffers=64MB"]
    # Durable by default (fsync, synchronous_commit and full-page writes on, as PostgreSQL ships
    # them). Measured and left as they are, since none made a call's statements faster here:
    # wal_compression, more shared_buffers, checkpoint spacing, commit_delay, wal_sync_method
    # (docs/benchmarks.md, "PostgreSQL's server settings").
    if not durable:
        # The tests' throw-away cluster: no fsync (what is tested is locking and visibility, which
        # durability does not change).
        command += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    return _as_server_user(command)


def redis_command(data: Path, port: int) -> list[str]:
    data.mkdir(parents=True, exist_ok=True)
    # No persistence: the layer and the cache hold only what may be lost (pushes in flight,
    # throttle counters, idempotency answers that the database also records).
    return ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", "", "--appendonly", "no"]


# How long a stopping Redis waits for its clients to leave (honcho kills what still runs after 5 s).
REDIS_STOP_GRACE = 3.0


def run_redis_last(data: Path, port: int, grace: float = REDIS_STOP_GRACE) -> int:
    """Run Redis in the foreground for honcho, and stop it after its clients.

    honcho stops every process of the Procfile at once. Redis would exit at once too, while the
    web processes and the worker are still stopping, and channels_redis would log each lost
    subscription as an error with its traceback. Here Redis runs in a process group of its own,
    which honcho's signal does not reach: the signal reaches this process, which then gives
    Redis's clients up to `grace` seconds to leave before stopping it, by its process id. Should
    this process die first, the kernel stops Redis (PR_SET_PDEATHSIG).
    """
    import ctypes

    import redis

    def die_with_parent() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    stop = False

    def stopping(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    process = subprocess.Popen(redis_command(data, port), start_new_session=True, preexec_fn=die_with_parent)
    while not stop and process.poll() is None:
        time.sleep(0.1)
    if process.poll() is None:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
        deadline = time.monotonic() + grace
        try:
            # Our own connection is one of the clients counted.
            while time.monotonic() < deadline and int(client.info("clients")["connected_clients"]) > 1:
                time.sleep(0.05)
        except redis.RedisError:
            pass
        finally:
            client.close()
        process.terminate()
    return process.wait()


NGINX_DIR = Path(__file__).resolve().parent / "nginx"


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def render_site(port: int, web_ports: Sequence[int], static_root: Path) -> str:
    """deploy/nginx/iaposte.conf with this machine's ports and paths on its "run-scaled:" lines."""
    lines = (NGINX_DIR / "iaposte.conf").read_text().splitlines()
    out: list[str] = []
    skipping = False
    for index, line in enumerate(lines):
        marker = line.strip()
        if marker == "# run-scaled: web servers begin":
            skipping = True
            out += [f"    server 127.0.0.1:{web} max_fails=1 fail_timeout=5s;" for web in web_ports]
        elif marker == "# run-scaled: web servers end":
            skipping = False
        elif lines[index - 1].strip() == "# run-scaled: listen":
            out.append(f"    listen 127.0.0.1:{port};")
        elif lines[index - 1].strip() == "# run-scaled: static":
            out.append(f"        alias {static_root}/;")
        elif not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def prepare_nginx(prefix: Path, port: int, web_ports: Sequence[int], static_root: Path) -> None:
    for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "temp" / temp).mkdir(parents=True, exist_ok=True)
    shutil.copy(NGINX_DIR / "nginx.conf", prefix / "nginx.conf")
    (prefix / "iaposte.conf").write_text(render_site(port, web_ports, static_root))
    user = _server_user()
    if user is not None:
        for path in [prefix, *prefix.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)


def nginx_command(prefix: Path) -> list[str]:
    # -e: the error log before the configuration is read (the default under /var/log is not ours).
    command = [nginx_binary(), "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
    return _as_server_user(command)


def start_nginx(prefix: Path, port: int, web_ports: Sequence[int], static_root: Path) -> Running:
    prepare_nginx(prefix, port, web_ports, static_root)
    log = prefix / "error.log"
    process = subprocess.Popen(nginx_command(prefix), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_until(lambda: port_open(port), process, "nginx", log)
    return Running("nginx", process, f"http://127.0.0.1:{port}")


def database_url(port: int, name: str = "iaposte") -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{name}"


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM by pid, then SIGKILL if it does not go."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{what} did not start:\n{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def postgres_ready(port: int, name: str = "iaposte") -> bool:
    import psycopg

    try:
        with psycopg.connect(database_url(port, "postgres"), autocommit=True, connect_timeout=2) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                try:
                    conn.execute(f'CREATE DATABASE "{name}"')
                except psycopg.errors.UniqueViolation:
                    pass  # another process starting at the same time created it
        return True
    except psycopg.OperationalError:
        return False


def start_postgres(folder: Path, port: int | None = None, *, durable: bool = True) -> Running:
    port = port or free_port()
    data, sockets, log = folder / "postgres", folder / "run", folder / "postgres.log"
    init_postgres(data, sockets)
    process = subprocess.Popen(postgres_command(data, sockets, port, durable=durable), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_until(lambda: postgres_ready(port), process, "PostgreSQL", log)
    return Running("postgres", process, database_url(port))


def start_redis(folder: Path, port: int | None = None) -> Running:
    port = port or free_port()
    log = folder / "redis.log"
    process = subprocess.Popen(redis_command(folder / "redis", port), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_until(lambda: port_open(port), process, "Redis", log)
    return Running("redis", process, f"redis://127.0.0.1:{port}/0")


def run_with_servers(command: Sequence[str]) -> int:
    """Run `command` with a fresh PostgreSQL and Redis; both are stopped (by pid) however it ends."""
    folder = Path(tempfile.mkdtemp(prefix="iaposte-servers-"))
    _give_to_server_user(folder)
    running: list[Running] = []
    try:
        running.append(start_postgres(folder, durable=False))
        running.append(start_redis(folder))
        env = {**os.environ, "DATABASE_URL": running[0].url, "TEST_REDIS_URL": running[1].url}
        print(
            f"PostgreSQL {running[0].url} (pid {running[0].process.pid}), Redis {running[1].url} (pid {running[1].process.pid})", flush=True
        )
        return subprocess.call(list(command), env=env)
    finally:
        for server in reversed(running):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.servers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    with_ = sub.add_parser("with", help="run a command with a fresh PostgreSQL and Redis (DATABASE_URL, TEST_REDIS_URL)")
    with_.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("missing", help="print the Debian packages still to install, one line")
    for name in ("postgres", "redis"):
        server = sub.add_parser(name, help=f"run {name} in the foreground (for honcho)")
        server.add_argument("--folder", type=Path, required=True)
        server.add_argument("--port", type=int, required=True)
    nginx = sub.add_parser("nginx", help="run nginx in the foreground from a prefix made by deploy.scaled prepare")
    nginx.add_argument("--prefix", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.action == "with":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return run_with_servers(command)
    if args.action == "missing":
        print(" ".join(missing_packages()))
        return 0
    if args.action == "nginx":
        command = nginx_command(args.prefix)
    elif args.action == "postgres":
        init_postgres(args.folder / "postgres", args.folder / "run")
        command = postgres_command(args.folder / "postgres", args.folder / "run", args.port)
    else:
        return run_redis_last(args.folder / "redis", args.port)
    os.execvp(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
