"""The scaled topology on one machine: nginx, two web processes, a worker, PostgreSQL, Redis and
the local engine, run by honcho from deploy/Procfile (`make run-scaled`; docs/deployment.md).

- `python -m deploy.scaled prepare --port P [--var DIR]` installs what is missing (as root; else it
  prints the one command to run), creates the data folder, PostgreSQL's cluster, nginx's prefix and
  the static files, and writes DIR/run-scaled.env and DIR/Procfile for honcho;
- `python -m deploy.scaled ready` (each Django process, before it starts) waits for PostgreSQL and
  Redis, creates the database, and applies migrations under a PostgreSQL advisory lock, so the
  processes starting together migrate once;
- `Topology` starts and stops the whole of it for the topology tests and the benchmarks.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy import servers

ROOT = servers.ROOT
PROCFILE = Path(__file__).resolve().parent / "Procfile"
# Any fixed number: the advisory lock under which one starting process migrates at a time.
MIGRATE_LOCK = 0x1A905_7E


@dataclass
class Ports:
    public: int
    web: list[int]
    engine: int
    postgres: int
    redis: int
    # The local engine's SIP endpoint (UDP and TCP); None: its setting (LOCALREALTIME_SIP_PORT).
    sip: int | None = None

    @classmethod
    def after(cls, public: int) -> Ports:
        """Predictable ports for an operator: the ones right after the public port (SIP on its own)."""
        return cls(public, [public + 1, public + 2], public + 3, public + 4, public + 5)

    @classmethod
    def free(cls) -> Ports:
        """Ports nothing listens on, SIP's included: a topology started by a test or a bench
        must not meet `make run`'s engine, or another topology, on the SIP port."""
        free = servers.free_port
        return cls(free(), [free(), free()], free(), free(), free(), sip=free())


def ensure_packages() -> None:
    """Install the Debian packages the topology runs on, as root; otherwise say the one command."""
    missing = servers.missing_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"Missing Debian packages. Run:\n  sudo apt-get install -y {' '.join(missing)}\nthen run this again.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env)


def environment(var: Path, ports: Ports, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What every process of the topology is started with (written to var/run-scaled.env)."""
    openai = bool(os.environ.get("OPENAI_API_KEY"))
    env = {
        "PYTHON": sys.executable,
        "IAPOSTE_VAR": str(var),
        "DJANGO_SETTINGS_MODULE": "iaposte.settings",
        # Like `make run`: local mode (anonymous requests from loopback); a real host turns it off.
        "DEBUG": os.environ.get("DEBUG", "true"),
        "WEB1_PORT": str(ports.web[0]),
        "WEB2_PORT": str(ports.web[1]),
        "ENGINE_PORT": str(ports.engine),
        "POSTGRES_PORT": str(ports.postgres),
        "REDIS_PORT": str(ports.redis),
        "DATABASE_URL": servers.database_url(ports.postgres),
        "REDIS_URL": f"redis://127.0.0.1:{ports.redis}/0",
        # Monitors and the sweeper run in the worker only; the web processes serve requests.
        "REALTIME_MONITORS": "worker",
        # Only nginx, on this machine, may say who the client is.
        "REALTIME_TRUSTED_PROXIES": "127.0.0.1",
        "ALLOWED_HOSTS": "localhost,127.0.0.1",
        "LOCALREALTIME_ENABLED": "false",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    if not openai:
        # The engine is another service, reached like OpenAI, with a key of its own.
        env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{ports.engine}/v1"
        env["LOCALREALTIME_API_KEY"] = os.environ.get("LOCALREALTIME_API_KEY") or f"sk-local-{secrets.token_hex(16)}"
        # Its SIP side posts signed webhooks to the web processes through nginx, as OpenAI would.
        secret = os.environ.get("LOCALREALTIME_WEBHOOK_SECRET") or "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        env["LOCALREALTIME_WEBHOOK_SECRET"] = env["OPENAI_WEBHOOK_SECRETS"] = secret
        env["LOCALREALTIME_SIP_WEBHOOK_URL"] = f"http://127.0.0.1:{ports.public}/api/realtime/sip/webhook"
        if ports.sip is not None:
            env["LOCALREALTIME_SIP_PORT"] = str(ports.sip)
    env.update(extra or {})
    return env


def procfile(openai: bool) -> str:
    lines = PROCFILE.read_text().splitlines()
    return "\n".join(line for line in lines if not (openai and line.startswith("engine:"))) + "\n"


def prepare(var: Path, ports: Ports, extra: dict[str, str] | None = None) -> dict[str, str]:
    ensure_packages()
    var.mkdir(parents=True, exist_ok=True)
    servers._give_to_server_user(var)
    servers.init_postgres(var / "postgres", var / "run")
    env = environment(var, ports, extra)
    run_env = {**os.environ, **env}
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=run_env, check=True)
    servers.prepare_nginx(var / "nginx", ports.public, ports.web, ROOT / "staticfiles")
    (var / "run-scaled.env").write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    (var / "Procfile").write_text(procfile(bool(os.environ.get("OPENAI_API_KEY"))))
    return env


def ready(*, migrate: bool = True, within: float = 60) -> None:
    """Wait for PostgreSQL and Redis; create the database and migrate (once, under a lock)."""
    import psycopg

    postgres, redis = int(os.environ["POSTGRES_PORT"]), int(os.environ["REDIS_PORT"])
    deadline = time.monotonic() + within
    while not (servers.postgres_ready(postgres) and servers.port_open(redis)):
        if time.monotonic() > deadline:
            sys.exit("PostgreSQL or Redis did not start in time")
        time.sleep(0.2)
    if not migrate:
        return
    with psycopg.connect(servers.database_url(postgres), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK])
        try:
            subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK])


# honcho's "system | web1.1 started (pid=1234)"
STARTED = re.compile(r"\| (\w+)\.\d+ started \(pid=(\d+)\)")


@dataclass
class Group:
    """One honcho running some of the Procfile's processes (all of them when `names` is empty)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for m in STARTED.finditer(self.log.read_text(errors="replace"))}


@dataclass
class Topology:
    """The whole topology, for tests and benchmarks: started, waited for, stopped.

    honcho stops every process it runs when one of them ends (right for `make run-scaled`: nothing
    runs half-way unnoticed). The topology tests kill one web process and one worker and expect
    the others to carry on, as systemd's units would: so there each of those runs under a honcho
    of its own (`groups`), from the same Procfile.
    """

    var: Path
    ports: Ports
    env: dict[str, str]
    groups: list[Group] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.public}"

    def web_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports.web[index]}"

    def group(self, name: str) -> Group:
        return next(group for group in self.groups if group.name == name)

    def kill(self, group: str, process: str) -> None:
        """kill -9 one process of the topology (its honcho then ends; the other groups carry on)."""
        os.kill(self.group(group).pids()[process], signal.SIGKILL)

    def stop(self) -> None:
        # honcho passes SIGTERM to each of its processes and waits for them.
        for group in reversed(self.groups):
            servers.stop_process(group.process, timeout=30)


def start(var: Path, *, extra: dict[str, str] | None = None, groups: dict[str, list[str]] | None = None, within: float = 120) -> Topology:
    """Start the topology; `groups` maps a name to the Procfile processes one honcho runs (default: all in one)."""
    ports = Ports.free()
    env = prepare(var, ports, extra)
    topology = Topology(var, ports, env)
    for name, processes in (groups or {"all": []}).items():
        log = var / f"honcho-{name}.log"
        command = [sys.executable, "-m", "honcho", "--no-colour", "-f", str(var / "Procfile"), "-e", str(var / "run-scaled.env")]
        command += ["-d", str(ROOT), "start", *processes]
        process = subprocess.Popen(command, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **env})
        topology.groups.append(Group(name, process, log))
    deadline = time.monotonic() + within
    while True:
        try:
            # The web processes first: nginx, asked before they listen, would set them aside a while.
            urls = (topology.web_url(0), topology.web_url(1), topology.url)
            if all(httpx.get(f"{url}/api/realtime/health", timeout=3).status_code == 200 for url in urls):
                return topology
        except httpx.HTTPError:
            pass
        if any(group.process.poll() is not None for group in topology.groups) or time.monotonic() > deadline:
            topology.stop()
            logs = "\n".join(group.log.read_text(errors="replace")[-3000:] for group in topology.groups)
            raise RuntimeError(f"the topology did not start:\n{logs}")
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.scaled")
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="install what is missing, create var/, write var/run-scaled.env and var/Procfile")
    prep.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="the public port (nginx)")
    prep.add_argument("--var", type=Path, default=ROOT / "var")
    ready_ = sub.add_parser("ready", help="wait for PostgreSQL and Redis, then migrate under a lock")
    ready_.add_argument("--no-migrate", action="store_true", help="only wait")
    args = parser.parse_args(argv)
    if args.action == "prepare":
        var = args.var.resolve()
        prepare(var, Ports.after(args.port))
        print(f"Scaled topology prepared in {var}; nginx will answer on http://127.0.0.1:{args.port}", flush=True)
    else:
        ready(migrate=not args.no_migrate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
