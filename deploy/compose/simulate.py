#!/usr/bin/env python3
"""Run docker-compose.yml's topology without Docker, to test it offline.

CI has no Docker engine, so this script plays the compose services with the
machine's own programs, reading what to run from docker-compose.yml itself:

- every service gets its own loopback address (primary 127.0.0.2, replica1
  127.0.0.3, ...) in a private network namespace, and a private /etc/hosts
  (bind-mounted in a private mount namespace) resolves the service names to
  them, as Docker's DNS would;
- "primary" is initialised the way the postgres image's entrypoint does it on
  first start (initdb with POSTGRES_USER/POSTGRES_PASSWORD, a scram-sha-256
  `host all all all` line, POSTGRES_DB, then /docker-entrypoint-initdb.d/ —
  here deploy/compose/primary-init.sh), then started with the service's
  `command`;
- "replica1"/"replica2" run deploy/compose/replica-entrypoint.sh for real,
  with the service's environment; `gosu` and the image's
  `docker-entrypoint.sh` are small stand-ins that start the machine's
  PostgreSQL as the postgres account on the service's address;
- "pglb" runs target/debug/pglb (or $PGLB) with the service's command,
  environment and mounted configuration; its healthcheck command is run as
  written in docker-compose.yml;
- profile "haproxy": "healthd" runs `pglb healthd` with the service's
  command, "haproxy" runs the machine's haproxy (Debian 12: 2.6, the image's
  major version) on deploy/compose/haproxy.cfg unchanged.

It then connects through each load balancer with psql, stops replica1 (seed
004's test_failover.sh) and checks that it is taken out and put back.

Needs root (namespaces, runuser), PostgreSQL's server binaries, psql, socat,
haproxy and PyYAML. Prints what it checks; exits 1 on the first failure.
Usage: simulate.py [--keep]   (--keep: leave the work directory for reading)
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
ADDRS = {"primary": "127.0.0.2", "replica1": "127.0.0.3", "replica2": "127.0.0.4", "healthd": "127.0.0.5",
         "pglb": "127.0.0.6", "haproxy": "127.0.0.7"}
PASSWORD = "postgres"


def fail(msg):
    print(f"simulate: FAILED: {msg}", flush=True)
    raise SystemExit(1)


def step(msg):
    print(f"simulate: {msg}", flush=True)


def pg_bindir():
    found = sorted((d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int) if os.path.isdir("/usr/lib/postgresql") else []
    if not found:
        fail("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    return f"/usr/lib/postgresql/{found[-1]}/bin"


def enter_namespaces():
    """Re-runs this script in new network and mount namespaces."""
    if os.environ.get("PGLB_SIMULATE_INNER") == "1":
        return
    if os.geteuid() != 0:
        fail("needs root (network and mount namespaces, runuser)")
    env = dict(os.environ, PGLB_SIMULATE_INNER="1")
    r = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", sys.executable, *sys.argv], env=env)
    raise SystemExit(r.returncode)


class Sim:
    def __init__(self, keep):
        self.keep = keep
        self.compose = yaml.safe_load(open(COMPOSE))
        self.services = self.compose["services"]
        self.bindir = pg_bindir()
        self.work = tempfile.mkdtemp(prefix="pglb-compose-sim-", dir="/tmp")
        os.chmod(self.work, 0o755)
        self.procs = []  # (name, Popen)
        self.pglb = os.environ.get("PGLB") or os.path.join(ROOT, "target", "debug", "pglb")
        if not os.access(self.pglb, os.X_OK):
            fail(f"no pglb binary at {self.pglb} (cargo build, or set PGLB)")

    # ---- environment -------------------------------------------------
    def setup_network(self):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        hosts = os.path.join(self.work, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n")
            for name, addr in ADDRS.items():
                f.write(f"{addr} {name}\n")
        subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
        # /var/run/pglb (the stats socket) without touching the real /run.
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
        os.makedirs("/run/pglb")
        stubs = os.path.join(self.work, "bin")
        os.makedirs(stubs)
        with open(os.path.join(stubs, "gosu"), "w") as f:
            f.write('#!/bin/bash\nu="$1"; shift\nexec runuser -u "$u" -- env PATH="$PATH" "$@"\n')
        with open(os.path.join(stubs, "docker-entrypoint.sh"), "w") as f:
            # The image's entrypoint, for an initialised data directory: start
            # the server as postgres with the service's command arguments.
            f.write('#!/bin/bash\n[ "$1" = postgres ] && shift\n'
                    'exec runuser -u postgres -- "$PG_BINDIR/postgres" -D "$PGDATA" '
                    '-c listen_addresses="$SIM_ADDR" -c unix_socket_directories="$SIM_SOCKDIR" "$@"\n')
        for s in ("gosu", "docker-entrypoint.sh"):
            os.chmod(os.path.join(stubs, s), 0o755)
        self.stubs = stubs

    def host_path(self, service, container_path):
        """The repository file a service mounts at container_path."""
        for v in self.services[service].get("volumes", []):
            src, dst = v.split(":")[:2]
            if dst == container_path:
                return os.path.normpath(os.path.join(ROOT, src))
        return None

    def env_of(self, service):
        env = self.services[service].get("environment", {}) or {}
        return {k: str(v) for k, v in env.items()}

    def start(self, name, argv, env=None, user=None):
        log = open(os.path.join(self.work, f"{name}.log"), "ab")
        full_env = dict(os.environ, **(env or {}))
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop(self, name):
        # The postgres image's STOPSIGNAL is SIGINT (fast shutdown): a smart
        # shutdown (SIGTERM) would wait for the checks' kept connections.
        sig = signal.SIGINT if name in ("primary", "replica1", "replica2") else signal.SIGTERM
        for n, p in list(self.procs):
            if n == name and p.poll() is None:
                os.killpg(p.pid, sig)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs = [(n, p) for n, p in self.procs if n != name]

    def stop_all(self):
        for n, _ in reversed(list(self.procs)):
            self.stop(n)

    def log_tail(self, name, lines=15):
        try:
            return "".join(open(os.path.join(self.work, f"{name}.log"), errors="replace").readlines()[-lines:])
        except OSError:
            return ""

    # ---- helpers -------------------------------------------------------
    def psql(self, host, port, sql, timeout=10):
        env = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="5")
        r = subprocess.run(["psql", "-X", "-A", "-t", "-h", host, "-p", str(port), "-U", "postgres", "-d", "appdb", "-c", sql],
                           capture_output=True, text=True, env=env, timeout=timeout)
        return r.returncode, r.stdout.strip(), r.stderr.strip()

    def wait(self, what, cond, timeout=30, interval=0.3):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = cond()
                if last:
                    return last
            except Exception as e:  # noqa: BLE001 - any error means "not yet"
                last = e
            time.sleep(interval)
        fail(f"timed out waiting for {what} (last: {last!r})")

    def http(self, url):
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    # ---- services ------------------------------------------------------
    def start_primary(self):
        svc = "primary"
        env = self.env_of(svc)
        data = os.path.join(self.work, "primary")
        os.makedirs(data, mode=0o700)
        shutil.chown(data, "postgres", "postgres")
        pwfile = os.path.join(self.work, "pw")
        with open(pwfile, "w") as f:
            f.write(env["POSTGRES_PASSWORD"] + "\n")
        shutil.chown(pwfile, "postgres")
        step("primary: initdb, as the postgres image does on first start")
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bindir}/initdb", "-D", data, "--username", env["POSTGRES_USER"],
                        "--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256"], check=True, capture_output=True, timeout=120)
        with open(os.path.join(data, "pg_hba.conf"), "a") as f:
            f.write("\nhost all all all scram-sha-256\n")
        sock = os.path.join(self.work, "sock-primary")
        os.makedirs(sock)
        shutil.chown(sock, "postgres")
        ctl = ["runuser", "-u", "postgres", "--", f"{self.bindir}/pg_ctl", "-D", data, "-w", "-s"]
        # -l: the server must not inherit (and hold open) a pipe of ours.
        init_log = os.path.join(self.work, "primary-init.log")
        open(init_log, "w").close()
        shutil.chown(init_log, "postgres")
        subprocess.run([*ctl, "-l", init_log, "-o",
                        f"-c listen_addresses='' -c unix_socket_directories={sock}", "start"], check=True, stdout=subprocess.DEVNULL, timeout=60)
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-h", sock, "-U", env["POSTGRES_USER"], "-d", "postgres",
                        "-c", f'create database "{env["POSTGRES_DB"]}"'], check=True, timeout=60)
        for v in self.services[svc].get("volumes", []):
            src, dst = v.split(":")[:2]
            if dst.startswith("/docker-entrypoint-initdb.d/"):
                step(f"primary: running {src} ({dst})")
                r = subprocess.run(["runuser", "-u", "postgres", "--", "bash", os.path.join(ROOT, src)],
                                   env=dict(os.environ, PGHOST=sock, PGDATA=data, **env), capture_output=True, text=True, timeout=60)
                if r.returncode != 0:
                    fail(f"{src} failed: {r.stderr}")
        subprocess.run([*ctl, "-m", "fast", "stop"], check=True, stdout=subprocess.DEVNULL, timeout=60)
        command = self.services[svc]["command"]
        assert command[0] == "postgres", command
        self.start("primary", [f"{self.bindir}/postgres", "-D", data, "-c", f"listen_addresses={ADDRS['primary']}",
                               "-c", f"unix_socket_directories={sock}", *command[1:]], user="postgres")
        self.wait("the primary to accept connections", lambda: self.psql(ADDRS["primary"], 5432, "select 1")[0] == 0)

    def start_replica(self, svc):
        spec = self.services[svc]
        entry = self.host_path(svc, spec["entrypoint"][0])
        if not entry:
            fail(f"{svc}: its entrypoint {spec['entrypoint'][0]} is not mounted from the repository")
        sock = os.path.join(self.work, f"sock-{svc}")
        os.makedirs(sock)
        shutil.chown(sock, "postgres")
        env = dict(self.env_of(svc), PGDATA=os.path.join(self.work, svc), PATH=f"{self.stubs}:{self.bindir}:{os.environ['PATH']}",
                   PG_BINDIR=self.bindir, SIM_ADDR=ADDRS[svc], SIM_SOCKDIR=sock)
        step(f"{svc}: {os.path.relpath(entry, ROOT)} {' '.join(spec['command'])}")
        self.start(svc, ["bash", entry, *spec["command"]], env=env)

    def replication(self):
        rc, out, _ = self.psql(ADDRS["primary"], 5432, "select application_name || ':' || state from pg_stat_replication order by 1")
        return out.split() if rc == 0 else []

    def start_pglb(self):
        spec = self.services["pglb"]
        argv = [self.host_path("pglb", a) or a for a in spec["command"]]
        step(f"pglb: pglb {' '.join(spec['command'])}")
        self.start("pglb", [self.pglb, *argv], env=self.env_of("pglb"))

    def compose_healthcheck(self, svc):
        test = self.services[svc]["healthcheck"]["test"]
        assert test[0] == "CMD", test
        return subprocess.run(test[1:], capture_output=True, timeout=10).returncode == 0

    def show_stat(self, via_socat=False):
        if via_socat:
            r = subprocess.run(["socat", "stdio", "/var/run/pglb/pglb.sock"], input="show stat\n", capture_output=True, text=True, timeout=10)
        else:
            r = subprocess.run([self.pglb, "ctl", "-S", "/var/run/pglb/pglb.sock", "show", "stat"], capture_output=True, text=True, timeout=10)
        return {(row[0], row[1]): row[17] for row in (l.split(",") for l in r.stdout.splitlines() if l and not l.startswith("#"))}

    def haproxy_stat(self):
        _, body = self.http("http://127.0.0.1:8404/stats;csv")
        return {(row[0], row[1]): row[17] for row in (l.split(",") for l in body.splitlines() if l and not l.startswith("#"))}

    def servers_seen(self, port, n=6):
        seen = set()
        for _ in range(n):
            rc, out, err = self.psql("127.0.0.1", port, "select inet_server_addr()::text || ' ' || pg_is_in_recovery()::text")
            if rc != 0:
                fail(f"psql through port {port}: {err}")
            addr, in_recovery = out.split()
            seen.add(f"{addr.split('/')[0]} {in_recovery}")
        return seen

    # ---- scenario -------------------------------------------------------
    def run(self, with_haproxy):
        self.setup_network()
        self.start_primary()
        for r in ("replica1", "replica2"):
            self.start_replica(r)
        self.wait("replica1 and replica2 to stream from the primary",
                  lambda: self.replication() == ["replica1:streaming", "replica2:streaming"], timeout=60)
        step("primary: pg_stat_replication shows replica1 and replica2 streaming")
        rc, out, _ = self.psql(ADDRS["replica1"], 5432, "select count(*) from lb_demo")
        if rc != 0 or out != "1":
            fail(f"replica1 does not have primary-init.sh's table lb_demo ({out})")

        self.start_pglb()
        self.wait("pglb's healthcheck (docker-compose.yml) to pass", lambda: self.compose_healthcheck("pglb"))
        step("pglb: the compose healthcheck command passes")
        want = {("replicas", "replica1"): "UP", ("replicas", "replica2"): "UP", ("primary", "primary"): "UP",
                ("primary", "replica1"): "DOWN", ("primary", "replica2"): "DOWN"}
        self.wait("pglb's checks to settle", lambda: all(self.show_stat().get(k) == v for k, v in want.items()))
        # Polled too: a check that fails once in between (a busy CI machine)
        # shows a transitional state such as "UP 1/3" for a moment.
        def socat_agrees():
            got = self.show_stat(via_socat=True)
            differs = {k: got.get(k) for k, v in want.items() if got.get(k) != v}
            if differs:
                raise AssertionError(f"socat saw {differs}")
            return True
        self.wait("echo 'show stat' | socat stdio /var/run/pglb/pglb.sock to agree with pglb ctl", socat_agrees)
        step("pglb: pglb ctl show stat and socat agree: replicas UP in 'replicas', only primary UP in 'primary'")
        status, body = self.http("http://127.0.0.1:8404/ready")
        if status != 200:
            fail(f"/ready answered {status}: {body}")
        seen = self.servers_seen(5434)
        if seen != {f"{ADDRS['replica1']} true", f"{ADDRS['replica2']} true"}:
            fail(f"read-only port 5434 reached {seen}, expected both replicas")
        step(f"pglb: read-only port 5434 reaches both replicas ({', '.join(sorted(seen))})")
        seen = self.servers_seen(5433, 3)
        if seen != {f"{ADDRS['primary']} false"}:
            fail(f"read-write port 5433 reached {seen}, expected the primary")
        step("pglb: read-write port 5433 reaches the primary")
        _, metrics = self.http("http://127.0.0.1:8404/metrics")
        for needle in ('haproxy_backend_up{proxy="replicas"} 1', 'pglb_server_streaming{proxy="replicas",server="replica1"} 1',
                       'pglb_server_replication_lag_seconds{proxy="replicas",server="replica2"} ', 'pglb_split_brain{proxy="primary"} 0'):
            if needle not in metrics:
                fail(f"/metrics has no line starting {needle!r}")
        step("pglb: /metrics has the alerts' inputs (backend up, replication lag, split brain)")

        self.failover("pglb", lambda: self.show_stat().get(("replicas", "replica1")), 5434)
        self.stop("pglb")

        if with_haproxy:
            spec = self.services["healthd"]
            step("healthd: pglb " + " ".join(shlex.quote(a) for a in spec["command"]))
            self.start("healthd", [self.pglb, *spec["command"]])
            self.wait("healthd's healthcheck (docker-compose.yml) to pass", lambda: self.compose_healthcheck("healthd"))
            checks = {8008: ("/replica?lag=10s", 200), 8009: ("/replica?lag=10s", 200), 8010: ("/primary", 200)}
            for port, (path, code) in checks.items():
                self.wait(f"healthd:{port}{path} to answer {code}",
                          lambda: self.http(f"http://{ADDRS['healthd']}:{port}{path}") [0] == code)
            status, body = self.http(f"http://{ADDRS['healthd']}:8008/primary")
            if status != 503 or "OK" in body:
                fail(f"healthd:8008/primary (a replica) answered {status} {body!r}")
            step("healthd: /replica?lag=10s is 200 on 8008 and 8009, /primary 200 on 8010 and 503 (no 'OK') on 8008")
            cfg = self.host_path("haproxy", "/usr/local/etc/haproxy/haproxy.cfg")
            step(f"haproxy: haproxy -f {os.path.relpath(cfg, ROOT)}")
            self.start("haproxy", ["haproxy", "-f", cfg])
            want = {("replicas", "replica1"): "UP", ("replicas", "replica2"): "UP", ("primary", "primary"): "UP",
                    ("primary", "replica1"): "DOWN", ("primary", "replica2"): "DOWN"}
            self.wait("haproxy's checks to settle", lambda: all(self.haproxy_stat().get(k) == v for k, v in want.items()))
            seen = self.servers_seen(5434)
            if seen != {f"{ADDRS['replica1']} true", f"{ADDRS['replica2']} true"}:
                fail(f"haproxy read-only port reached {seen}")
            seen = self.servers_seen(5433, 3)
            if seen != {f"{ADDRS['primary']} false"}:
                fail(f"haproxy read-write port reached {seen}")
            step("haproxy: read-only port reaches both replicas, read-write port the primary")
            self.failover("haproxy", lambda: self.haproxy_stat().get(("replicas", "replica1")), 5434)

    def failover(self, lb, replica1_status, port):
        """Seed 004's test_failover.sh: stop replica1, then start it again."""
        started = time.monotonic()
        self.stop("replica1")
        self.wait(f"{lb} to mark replica1 DOWN", lambda: (replica1_status() or "").startswith("DOWN"))
        step(f"{lb}: replica1 stopped, marked DOWN after {time.monotonic() - started:.1f}s")
        seen = self.servers_seen(port, 4)
        if seen != {f"{ADDRS['replica2']} true"}:
            fail(f"{lb}: with replica1 stopped, port {port} reached {seen}")
        started = time.monotonic()
        self.start_replica_again()
        self.wait(f"{lb} to mark replica1 UP again", lambda: replica1_status() == "UP", timeout=60)
        step(f"{lb}: replica1 restarted, UP again after {time.monotonic() - started:.1f}s")

    def start_replica_again(self):
        spec = self.services["replica1"]
        entry = self.host_path("replica1", spec["entrypoint"][0])
        env = dict(self.env_of("replica1"), PGDATA=os.path.join(self.work, "replica1"),
                   PATH=f"{self.stubs}:{self.bindir}:{os.environ['PATH']}", PG_BINDIR=self.bindir, SIM_ADDR=ADDRS["replica1"],
                   SIM_SOCKDIR=os.path.join(self.work, "sock-replica1"))
        self.start("replica1", ["bash", entry, *spec["command"]], env=env)


def main():
    keep = "--keep" in sys.argv[1:]
    enter_namespaces()
    sim = Sim(keep)
    ok = False
    try:
        sim.run(with_haproxy=True)
        ok = True
    finally:
        sim.stop_all()
        if not ok:
            for name in ("primary", "replica1", "replica2", "pglb", "healthd", "haproxy"):
                tail = sim.log_tail(name)
                if tail:
                    print(f"--- {name} (last lines of {sim.work}/{name}.log)\n{tail}", flush=True)
        if keep or not ok:
            print(f"simulate: logs kept in {sim.work}")
        else:
            shutil.rmtree(sim.work, ignore_errors=True)
    step("docker-compose.yml topology works (pglb and the haproxy profile)")


if __name__ == "__main__":
    main()
