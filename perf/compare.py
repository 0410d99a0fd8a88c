#!/usr/bin/env python3
"""Runs one benchmark scenario against ringhub, the io_uring floor and the peer servers in the
same run, and writes a dated markdown report plus JSON into perf/results/.

Every server is started fresh for every run, pinned with `taskset -c 0`; the load generator
(`target/release/loadgen`) is pinned with `taskset -c 1` and reads the server's CPU time and
memory itself (`--server-pid`). Repetitions are interleaved (repetition 1 of every server, then
repetition 2, ...) so drift on a shared VM hits every server alike. ringhub is driven with SignalR
JSON on /hubs/diagnostics; the floor and the peers with raw WebSocket frames of the same length.

    python3 perf/compare.py s2 --subscribers 100,1000,10000 --rate 1000 --repeat 5
    python3 perf/compare.py s4 --connections 100,1000 --rate 10000 --size 128
    python3 perf/compare.py s1 --connections 1000,5000,10000,19000 --hold 120s
    python3 perf/compare.py s5 --mode echo,broadcast --connections 10,100
    python3 perf/compare.py s3 --shape small,big
    python3 perf/compare.py s2 --quick                # a few-second sanity run
    python3 perf/compare.py s2 --dry-run              # print the commands, run nothing

Comma-separated values are steps: every combination is run. Prerequisites:
`cargo build --release --workspace` and `npm ci --prefix perf/peers`. See perf/peers/README.md.
"""
import argparse
import datetime
import hashlib
import itertools
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "perf" / "peers"
BUN = PEERS / "node_modules" / "@oven" / "bun-linux-x64" / "bin" / "bun"
SERVER_CPU = "0"
LOADGEN_CPU = "1"

# ringhub's configuration for every scenario: one shard, the Diagnostics hub and the echo route
# on, invocation and per-address limits out of the way, no pinning of its own (taskset does it).
RINGHUB_SETTINGS = [
    "diagnostics.enabled=true",
    "echo.enabled=true",
    "signalr.invocation_rate=1000000",
    "signalr.invocation_burst=1000000",
    # The load generator opens thousands of connections (and negotiates) per source address.
    "limits.max_connections_per_ip=0",
    "limits.negotiate_rate_per_ip=0",
    "runtime.pin_cores=false",
]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Server:
    """A server under test: how to start it and how it says which port it got."""

    name: str
    what: str
    raw: bool
    listening: re.Pattern

    def command(self, args):
        node = os.environ.get("NODE", "node")
        if self.name == "ringhub":
            sets = [x for s in [*RINGHUB_SETTINGS, *args.ringhub_set] for x in ("--set", s)]
            return [str(args.ringhub), "--listen", "127.0.0.1:0", "--workers", "1", *sets]
        if self.name == "floor":
            # S1: keep-alives both ways (a ping-sized frame every 15 s), readiness-then-read
            # into one shared buffer; see perf/floor's "Idle mode".
            idle = ["--idle"] if args.scenario == "s1" else []
            return [str(args.floor), "--port", "0", *idle]
        if self.name == "floor-coalesce":
            return [str(args.floor), "--port", "0", "--coalesce"]
        if self.name == "bun":
            return [str(BUN), str(PEERS / "bun-server.js"), "--port", "0"]
        if self.name == "uws":
            return [node, str(PEERS / "uws-server.js"), "--port", "0"]
        return [node, str(PEERS / "ws-server.mjs"), "--port", "0"]


PEER_LINE = re.compile(r"^listening (?:\S*:)?(\d+)\s*$", re.M)
SERVERS = {
    s.name: s
    for s in [
        Server("ringhub", "ringhub, 1 shard, SignalR on {hub}", False,
               re.compile(r"listening.*addr=\S*:(\d+)")),
        Server("floor", "perf/floor: one frame built once, one io_uring Send SQE per socket "
               "and frame", True, PEER_LINE),
        Server("floor-coalesce", "perf/floor --coalesce: the same, but all frames queued for "
               "a socket go out in one SendMsg SQE", True, PEER_LINE),
        Server("bun", "Bun.serve (uWebSockets inside), topics + server.publish", True,
               PEER_LINE),
        Server("uws", "uWebSockets.js (@trufflesuite/uws-js-unofficial), app.publish", True,
               PEER_LINE),
        Server("ws", "Node ws 8 + bufferutil, loop over clients sending one Buffer", True,
               PEER_LINE),
    ]
}


@dataclass
class Scenario:
    """A loadgen subcommand: its step parameters (comma lists) and fixed ones."""

    unit: str
    steps: dict
    fixed: dict
    quick_steps: dict
    timed: bool = True
    notes: list = field(default_factory=list)


SCENARIOS = {
    "s1": Scenario(
        unit="connection",
        steps={"connections": "1000,5000,10000,19000"},
        fixed={"hold": "120s", "ramp": "1000"},
        quick_steps={"connections": "200"},
        timed=False,
        notes=["Idle connections held; RSS/conn is (VmRSS after - before) / N, kernel socket "
               "memory excluded (Slab delta shown separately).",
               "Connect CPU is the server's CPU from the first connect to the last handshake, per "
               "connection; idle CPU is its CPU over the hold only (every connection up, "
               "keep-alives only), in % of one core."],
    ),
    "s2": Scenario(
        unit="delivery",
        steps={"subscribers": "100,1000,10000", "rate": "1000"},
        fixed={"size": "1024"},
        quick_steps={"subscribers": "100", "rate": "1000"},
        notes=["Broadcast fan-out, open loop; CPU is the server's utime+stime per delivered "
               "message (softirq not included; see softirq_s in the JSON)."],
    ),
    "s3": Scenario(
        unit="delivery",
        steps={"shape": "small,big"},
        fixed={},
        quick_steps={"shape": "small"},
        notes=["Group sends, open loop (perf-scenarios.md §4 S3): small = 10,000 connections in "
               "1,000 groups of 10, 2,000 sends/s of 2,048 B (20,000 deliveries/s); big = 10 "
               "groups of 1,000, 20 sends/s. ringhub: SendToGroup on the hub; raw servers: each "
               "connection joins by its path /ws/group/NAME and a message it sends goes to every "
               "member of its group, itself included (perf/peers/README.md). The delivered "
               "frames have the same length on both wires.",
               "Shape `reconnect` is `churn` without JoinGroup/LeaveGroup (the raw wire has no "
               "invocations): small plus 100 reconnects/s of 1,000 extra connections in 10 "
               "groups each; `churn` (ringhub only) adds 1,000 joins and 1,000 leaves/s."],
    ),
    "s4": Scenario(
        unit="invocation",
        steps={"connections": "100,1000", "rate": "10000"},
        fixed={"size": "128"},
        quick_steps={"connections": "100", "rate": "1000"},
        notes=["Echo round trips, open loop aggregate rate; latency from the scheduled send "
               "time (coordinated omission corrected)."],
    ),
    "s5": Scenario(
        unit="MB",
        steps={"mode": "echo,broadcast", "connections": "10,100"},
        fixed={"size": "32000"},
        quick_steps={"mode": "echo,broadcast", "connections": "10"},
        notes=["32,000 B messages, closed loop (echo: every connection in a loop; broadcast: "
               "one publisher, the connections subscribe)."],
    ),
}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name, scenario in SCENARIOS.items():
        p = sub.add_parser(name, help=scenario.notes[0] if scenario.notes else name)
        for key in scenario.steps:
            p.add_argument(f"--{key}", default=None,
                           help=f"comma-separated steps (default {scenario.steps[key]}; "
                                f"--quick: {scenario.quick_steps[key]})")
        for key, default in scenario.fixed.items():
            p.add_argument(f"--{key}", default=default, help=f"default {default}")
        p.add_argument("--servers", default=",".join(SERVERS),
                       help=f"comma-separated, from {','.join(SERVERS)} (default all)")
        p.add_argument("--repeat", type=int, default=None, help="runs per server and step "
                       "(default 5, --quick 1)")
        p.add_argument("--warmup", default=None, help="default 10s (--quick 1s)")
        p.add_argument("--duration", default=None, help="default 30s (--quick 3s)")
        p.add_argument("--quick", action="store_true",
                       help="a few-second sanity run: small steps, short windows, one repetition")
        p.add_argument("--dry-run", action="store_true",
                       help="print the commands that would run, run nothing")
        p.add_argument("--ringhub-protocol", default="json", choices=["json", "msgpack"],
                       help="SignalR protocol for ringhub (default json)")
        p.add_argument("--ringhub-hub", default="/hubs/diagnostics", metavar="PATH",
                       help="ringhub hub path (default /hubs/diagnostics, which keeps request "
                            "headers for GetHeader; configure a product-like hub with "
                            "--ringhub-set for memory runs)")
        p.add_argument("--ringhub-set", action="append", default=[], metavar="KEY=VALUE",
                       help="extra ringhub --set, repeatable")
        p.add_argument("--loadgen-arg", action="append", default=[], metavar="ARG",
                       help="extra loadgen argument, repeatable (e.g. --loadgen-arg=--threads=1)")
        p.add_argument("--sources", default="4", help="client source addresses (default 4)")
        p.add_argument("--max-server-rss-mib", type=int, default=4096,
                       help="kill a server whose RSS passes this during a run (default 4096): "
                            "peers buffer without bound for subscribers they cannot keep up with")
        p.add_argument("--settle", type=float, default=2.0,
                       help="seconds between runs for the kernel to tear sockets down")
        p.add_argument("--loadgen", type=Path, default=ROOT / "target/release/loadgen")
        p.add_argument("--ringhub", type=Path, default=ROOT / "target/release/ringhub")
        p.add_argument("--floor", type=Path, default=ROOT / "target/release/ringhub-floor")
        p.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    args = parser.parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    args.repeat = args.repeat or (1 if args.quick else 5)
    args.warmup = args.warmup or ("1s" if args.quick else "10s")
    args.duration = args.duration or ("3s" if args.quick else "30s")
    if args.quick and args.scenario == "s1" and args.hold == scenario.fixed["hold"]:
        args.hold = "3s"
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in args.servers if s not in SERVERS]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {list(SERVERS)}")
    return args


def steps(args):
    """Every combination of the step parameters, as ordered dicts of strings."""
    scenario = SCENARIOS[args.scenario]
    lists = {}
    for key in scenario.steps:
        value = getattr(args, key)
        if value is None:
            value = (scenario.quick_steps if args.quick else scenario.steps)[key]
        lists[key] = [v.strip() for v in value.split(",") if v.strip()]
    return [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]


def loadgen_command(args, server, step, port, pid):
    scenario = SCENARIOS[args.scenario]
    params = {**step, **{k: getattr(args, k) for k in scenario.fixed}}
    cmd = ["taskset", "-c", LOADGEN_CPU, str(args.loadgen), args.scenario,
           "--url", f"http://127.0.0.1:{port}",
           "--protocol", "raw" if server.raw else args.ringhub_protocol]
    if not server.raw:
        cmd += ["--hub", args.ringhub_hub]
    if args.scenario == "s3" and params.get("shape") == "reconnect":
        # The churn preset without the hub-only group operations, so raw servers can run it.
        params = {**params, "shape": "churn", "join_rate": "0", "leave_rate": "0"}
    if args.scenario == "s1" and server.name == "floor":
        # The floor's idle route, and the keep-alive a SignalR JSON client sends (the same
        # bytes as a text message), which it reads and drops as ringhub does.
        cmd += ["--raw-path", "/ws/idle", "--raw-keepalive", "text"]
    for key, value in params.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    if scenario.timed:
        cmd += ["--warmup", args.warmup, "--duration", args.duration]
    connections = int(step.get("connections") or step.get("subscribers") or 0)
    if connections >= 15000:
        # Each process stays under the 20,000 open-file cap.
        cmd += ["--processes", "2"]
    cmd += ["--server-pid", str(pid), "--sources", args.sources, "--json", *args.loadgen_arg]
    return cmd


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def read_slab_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1])
    return None


class Running:
    """A started server: its process, port and log."""

    def __init__(self, args, server, logdir):
        self.server = server
        self.log_path = Path(logdir) / f"{server.name}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w+")
        cmd = ["taskset", "-c", SERVER_CPU, *server.command(args)]
        # taskset execs the server, so this pid is the server's own.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT)
        self.port = self._wait_for_port()
        self._wait_ready()

    def _wait_for_port(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server.name} exited with {self.proc.returncode}; "
                                   f"log: {self.log_path}\n{self.tail()}")
            match = self.server.listening.search(ANSI.sub("", self.log_path.read_text()))
            if match:
                return int(match.group(1))
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.server.name} printed no listening line in 20 s; "
                           f"log: {self.log_path}\n{self.tail()}")

    def _wait_ready(self):
        deadline = time.monotonic() + 10
        url = f"http://127.0.0.1:{self.port}/health/ready"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.server.name}: {url} not 200 within 10 s")
            time.sleep(0.05)

    def tail(self, lines=15):
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def last_json_object(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def timeout_for(args):
    seconds = 0.0
    for value in (args.warmup, args.duration, getattr(args, "hold", "0s")):
        seconds += duration_seconds(value)
    return seconds + 180


def duration_seconds(value):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", str(value).strip())
    if not match:
        raise ValueError(f"bad duration {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_once(args, server, step, rep, logdir):
    record = {"server": server.name, "step": step, "repetition": rep, "loadavg": loadavg()}
    slab_before = read_slab_kib()
    try:
        running = Running(args, server, logdir)
    except RuntimeError as error:
        record["error"] = str(error)
        return record
    try:
        cmd = loadgen_command(args, server, step, running.port, running.proc.pid)
        record["command"] = shlex.join(cmd)
        err_path = Path(logdir) / f"loadgen-{server.name}-{time.monotonic_ns()}.log"
        with open(err_path, "w") as err, tempfile.TemporaryFile("w+") as out:
            loadgen = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
            deadline = time.monotonic() + timeout_for(args)
            peak = 0
            while loadgen.poll() is None:
                rss = rss_kib(running.proc.pid)
                peak = max(peak, rss or 0)
                if rss and rss > args.max_server_rss_mib * 1024:
                    # A server buffering for subscribers it cannot keep up with can take the
                    # whole (shared) machine down; stop it and keep the run as failed.
                    record["error"] = (f"server RSS {rss // 1024} MiB went over "
                                       f"--max-server-rss-mib {args.max_server_rss_mib}")
                    running.proc.kill()
                    break
                if time.monotonic() > deadline:
                    record["error"] = "loadgen timed out"
                    break
                time.sleep(0.5)
            if loadgen.poll() is None:
                loadgen.kill()
            loadgen.wait()
            out.seek(0)
            record["exit_code"] = loadgen.returncode
            record["report"] = last_json_object(out.read())
            record["server_peak_rss_kib"] = peak
        slab_after = read_slab_kib()
        if slab_before is not None and slab_after is not None:
            record["slab_delta_kib"] = slab_after - slab_before
        if running.proc.poll() is not None and "error" not in record:
            record["error"] = f"server exited with {running.proc.returncode} during the run"
        if record.get("report") is None and "error" not in record:
            tail = "\n".join(err_path.read_text(errors="replace").splitlines()[-5:])
            record["error"] = f"no JSON report (exit {record.get('exit_code')}): {tail}"
        record["loadgen_log"] = str(err_path)
    finally:
        running.stop()
        record["server_log"] = str(running.log_path)
    return record


def describe(record):
    report = record.get("report") or {}
    server = report.get("server") or {}
    latency = report.get("latency_us") or {}
    if "error" in record:
        return f"ERROR {record['error'].splitlines()[0]}"
    if server.get("unit") == "connection":
        conns = report.get("connections") or {}
        return (f"connect cpu {fmt(server.get('cpu_us_per_unit'))} µs/connection, "
                f"idle cpu {fmt(server.get('cpu_percent'))} % over the hold, "
                f"rss {fmt(server.get('rss_per_connection_kib'))} KiB/conn, "
                f"drops {conns.get('drops')}, failed {conns.get('failed')}")
    return (f"cpu {fmt(server.get('cpu_us_per_unit'))} µs/{server.get('unit', '?')}, "
            f"delivered/s {fmt(report.get('rate_delivered_per_s'))}, lost {report.get('lost')}, "
            f"p50 {fmt(latency.get('p50'))} µs, p99 {fmt(latency.get('p99'))} µs")


def describe_server(name, args):
    """The server's description, with the hub path and protocol ringhub was driven on."""
    if name == "floor" and args.scenario == "s1":
        return ("perf/floor --idle on /ws/idle: a pre-built 13-byte keep-alive to each "
                "connection every 15 s, the client's 15 s keep-alive (the bytes of a JSON hub "
                "Ping) read after a readiness poll into one shared buffer and dropped")
    return SERVERS[name].what.format(hub=f"{args.ringhub_hub} ({args.ringhub_protocol})")


def fmt(value, digits=3):
    if value is None:
        return "–"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summarize(records, servers, step_list):
    """Median/min/max per (step, server) of the numbers compared."""
    out = []
    for step in step_list:
        for name in servers:
            runs = [r for r in records if r["server"] == name and r["step"] == step]
            reports = [r["report"] for r in runs if r.get("report")]

            def values(get):
                found = []
                for report in reports:
                    try:
                        value = get(report)
                    except (KeyError, TypeError):
                        continue
                    if isinstance(value, (int, float)):
                        found.append(value)
                return found

            def stats(get):
                found = values(get)
                if not found:
                    return None
                return {"median": statistics.median(found), "min": min(found),
                        "max": max(found)}

            expected = sum(values(lambda r: r["expected"]))
            out.append({
                "step": step,
                "server": name,
                "runs": len(runs),
                "ok_runs": sum(1 for r in runs if r.get("report") and "error" not in r
                               and r.get("exit_code") == 0),
                "unit": next((r["server"].get("unit") for r in reports
                              if isinstance(r.get("server"), dict)), None),
                "cpu_us_per_unit": stats(lambda r: r["server"]["cpu_us_per_unit"]),
                "rate_delivered_per_s": stats(lambda r: r["rate_delivered_per_s"]),
                "lost": sum(values(lambda r: r["lost"])),
                "expected": expected,
                "errors": sum(values(lambda r: r["errors"])),
                "p50_us": stats(lambda r: r["latency_us"]["p50"]),
                "p99_us": stats(lambda r: r["latency_us"]["p99"]),
                "p999_us": stats(lambda r: r["latency_us"]["p999"]),
                # S3 churn: disconnect, reconnect and rejoin, from its scheduled time.
                "reconnect_p50_us": stats(lambda r: r["group_ops"]["reconnect"]["p50"]),
                "reconnect_p99_us": stats(lambda r: r["group_ops"]["reconnect"]["p99"]),
                "rss_after_kib": stats(lambda r: r["server"]["rss_after_kib"]),
                "rss_per_connection_kib": stats(lambda r: r["server"]["rss_per_connection_kib"]),
                "softirq_s": stats(lambda r: r["server"]["softirq_s"]),
                # S1: CPU over the hold only (every connection up, keep-alives only).
                "idle_cpu_percent": stats(lambda r: r["server"]["cpu_percent"]),
                "drops": sum(values(lambda r: r["connections"]["drops"])),
                "failed": sum(values(lambda r: r["connections"]["failed"])),
                "slab_delta_kib": None,
            })
            for key in ("slab_delta_kib", "server_peak_rss_kib"):
                found = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
                out[-1][key] = ({"median": statistics.median(found), "min": min(found),
                                 "max": max(found)} if found else None)
    return out


def machine():
    def run(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return None

    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1048576:.1f} GiB"
    dirty = bool(run(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {
        "kernel": run(["uname", "-r"]),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": mem,
        "commit": run(["git", "rev-parse", "--short", "HEAD"]),
        "dirty": dirty,
        "node": run([os.environ.get("NODE", "node"), "--version"]),
        "bun": run([str(BUN), "--version"]) if BUN.exists() else None,
        "peer_packages": peer_versions(),
    }


def file_identity(path):
    """A binary's path, size, modification time and hash prefix: which build ran."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "sha256": digest,
            "modified": datetime.datetime.fromtimestamp(stat.st_mtime).isoformat(timespec="seconds")}


def peer_versions():
    versions = {}
    for package in ["@oven/bun-linux-x64", "@trufflesuite/uws-js-unofficial", "ws", "bufferutil"]:
        path = PEERS / "node_modules" / package / "package.json"
        if path.exists():
            versions[package] = json.loads(path.read_text()).get("version")
    return versions


def report_markdown(args, meta, summary, records):
    scenario = SCENARIOS[args.scenario]
    lines = [f"# {args.scenario.upper()} side by side, {meta['date']}", ""]
    lines += [f"- Command: `{meta['command']}`"]
    m = meta["machine"]
    lines += [f"- Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory']}, kernel {m['kernel']}",
              f"- Commit: {m['commit']}{' (uncommitted changes)' if m['dirty'] else ''}",
              f"- loadgen: `{meta['loadgen']['path']}` (sha256 {meta['loadgen']['sha256']}, "
              f"built {meta['loadgen']['modified']})",
              f"- Peers: node {m['node']}, bun {m['bun']}, "
              + ", ".join(f"{k} {v}" for k, v in m["peer_packages"].items()),
              f"- Pinning: servers `taskset -c {SERVER_CPU}`, loadgen `taskset -c {LOADGEN_CPU}`; "
              f"every run starts a fresh server; {args.repeat} repetition(s), interleaved",
              f"- Load average (1 min) at the runs' starts: up to {meta['loadavg']['max_at_run_start']}"
              f", {meta['loadavg']['end']} at the end. The server and loadgen account for about "
              "1–2; more means other jobs shared the 2 CPUs, and contention inflates CPU per unit",
              f"- Window: warm-up {args.warmup}, measurement {args.duration}"
              + (f", hold {args.hold}" if args.scenario == "s1" else ""),
              f"- ringhub: `{shlex.join(SERVERS['ringhub'].command(args))}` "
              f"(protocol {args.ringhub_protocol})",
              "- Fixed parameters: " + ", ".join(f"{k} {getattr(args, k)}" for k in scenario.fixed)]
    lines += [f"- {note}" for note in scenario.notes]
    lines += ["", "Servers:"] + [f"- **{n}**: {describe_server(n, args)}" for n in args.servers]
    lines += ["", "CPU columns are median (min–max) over the repetitions; \"× floor\" divides the "
              "median by the floor's. Loss is summed over repetitions.", ""]
    step_keys = list(scenario.steps)
    steps_seen = []
    for row in summary:
        if row["step"] not in steps_seen:
            steps_seen.append(row["step"])
    for step in steps_seen:
        rows = [r for r in summary if r["step"] == step]
        lines += [f"## {', '.join(f'{k} {step[k]}' for k in step_keys)}", ""]
        floor = next((r for r in rows if r["server"] == "floor" and r["cpu_us_per_unit"]), None)
        unit = next((r["unit"] for r in rows if r["unit"]), scenario.unit)
        header = ["server", f"CPU µs/{unit}", "× floor", "delivered/s", "lost / expected", "errors",
                  "p50 µs", "p99 µs", "peak RSS MiB"]
        reconnects = any(r["reconnect_p50_us"] for r in rows)
        if reconnects:
            header.insert(-1, "reconnect p50 / p99 µs")
        if args.scenario == "s1":
            header = ["server", "connect CPU µs/conn", "× floor", "idle CPU % (hold)",
                      "RSS/conn KiB", "Slab Δ KiB", "drops", "failed", "errors"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            cpu = r["cpu_us_per_unit"]
            ratio = (fmt(cpu["median"] / floor["cpu_us_per_unit"]["median"], 2)
                     if cpu and floor and floor["cpu_us_per_unit"]["median"] else "–")
            name = r["server"] + ("" if r["ok_runs"] == r["runs"]
                                  else f" ({r['ok_runs']}/{r['runs']} ok)")
            if args.scenario == "s1":
                cells = [name, spread(cpu), ratio, spread(r["idle_cpu_percent"]),
                         spread(r["rss_per_connection_kib"]), spread(r["slab_delta_kib"]),
                         fmt(r["drops"]), fmt(r["failed"]), fmt(r["errors"])]
            else:
                cells = [name, spread(cpu), ratio, median(r["rate_delivered_per_s"]),
                         f"{fmt(r['lost'])} / {fmt(r['expected'])}", fmt(r["errors"]),
                         median(r["p50_us"]), median(r["p99_us"]), mib(r["server_peak_rss_kib"])]
                if reconnects:
                    cells.insert(-1, f"{median(r['reconnect_p50_us'])} / "
                                     f"{median(r['reconnect_p99_us'])}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    failures = [r for r in records if "error" in r or r.get("exit_code") not in (0, None)]
    if failures:
        lines += ["## Failed or non-zero runs", ""]
        for r in failures:
            what = r.get("error") or f"loadgen exit {r.get('exit_code')}"
            lines.append(f"- {r['server']} {r['step']} rep {r['repetition']}: "
                         f"{what.splitlines()[0]}")
        lines.append("")
    lines += ["Per-run loadgen commands and reports are in the JSON file next to this one.", ""]
    return "\n".join(lines)


def spread(stat):
    if not stat:
        return "–"
    if stat["min"] == stat["max"]:
        return fmt(stat["median"])
    return f"{fmt(stat['median'])} ({fmt(stat['min'])}–{fmt(stat['max'])})"


def mib(stat):
    return fmt(stat["max"] / 1024) if stat else "–"


def median(stat):
    return fmt(stat["median"]) if stat else "–"


def output_paths(args, date):
    suffix = "-quick" if args.quick else ""
    base = f"{date}-compare-{args.scenario}{suffix}"
    n = 1
    while True:
        name = base if n == 1 else f"{base}-{n}"
        md, js = args.out / f"{name}.md", args.out / f"{name}.json"
        if not md.exists() and not js.exists():
            return md, js
        n += 1


def missing_prerequisites(args):
    missing = []
    if not args.loadgen.exists():
        missing.append(f"{args.loadgen} (cargo build --release --workspace)")
    needs = {
        "ringhub": (args.ringhub, "cargo build --release"),
        "floor": (args.floor, "cargo build --release -p ringhub-floor"),
        "floor-coalesce": (args.floor, "cargo build --release -p ringhub-floor"),
        "bun": (BUN, "npm ci --prefix perf/peers"),
        "uws": (PEERS / "node_modules/@trufflesuite/uws-js-unofficial", "npm ci --prefix perf/peers"),
        "ws": (PEERS / "node_modules/ws", "npm ci --prefix perf/peers"),
    }
    for name in args.servers:
        path, how = needs[name]
        if not Path(path).exists():
            missing.append(f"{path} ({how})")
    return missing


def main(argv):
    args = parse_args(argv)
    step_list = steps(args)
    if args.dry_run:
        print(f"# {len(step_list)} step(s) x {len(args.servers)} server(s) x "
              f"{args.repeat} repetition(s); PORT and PID are known once each server starts")
        for step in step_list:
            for rep in range(1, args.repeat + 1):
                for name in args.servers:
                    server = SERVERS[name]
                    print(f"# {name} {step} rep {rep}")
                    print(shlex.join(["taskset", "-c", SERVER_CPU, *server.command(args)]))
                    cmd = loadgen_command(args, server, step, "PORT", "PID")
                    print(shlex.join(cmd))
        missing = missing_prerequisites(args)
        if missing:
            print("# not built yet: " + "; ".join(missing))
        return 0
    missing = missing_prerequisites(args)
    if missing:
        print("missing: " + "\n  ".join(missing), file=sys.stderr)
        return 2
    started = datetime.datetime.now()
    meta = {"date": started.strftime("%Y-%m-%d %H:%M"),
            "command": shlex.join(["python3", "perf/compare.py", *argv]),
            "machine": machine(), "loadgen": file_identity(args.loadgen),
            "floor": file_identity(args.floor), "scenario": args.scenario, "unit": SCENARIOS[args.scenario].unit,
            "repeat": args.repeat, "warmup": args.warmup, "duration": args.duration,
            "servers": {n: describe_server(n, args) for n in args.servers},
            "ringhub_command": shlex.join(SERVERS["ringhub"].command(args)),
            "ringhub_protocol": args.ringhub_protocol}
    records = []
    logdir = tempfile.mkdtemp(prefix="ringhub-compare-")
    print(f"logs in {logdir}", file=sys.stderr)
    total = len(step_list) * args.repeat * len(args.servers)
    n = 0
    for step in step_list:
        for rep in range(1, args.repeat + 1):
            for name in args.servers:
                n += 1
                if records:
                    time.sleep(args.settle)
                record = run_once(args, SERVERS[name], step, rep, logdir)
                records.append(record)
                print(f"[{n}/{total}] {name} {step} rep {rep}: {describe(record)}",
                      file=sys.stderr)
    meta["loadavg"] = {"start": records[0]["loadavg"] if records else None, "end": loadavg(),
                       "max_at_run_start": max((r["loadavg"] for r in records), default=None)}
    summary = summarize(records, args.servers, step_list)
    args.out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = output_paths(args, started.strftime("%Y-%m-%d"))
    md = report_markdown(args, meta, summary, records)
    md_path.write_text(md)
    json_path.write_text(json.dumps({"meta": meta, "summary": summary, "runs": records},
                                    indent=1) + "\n")
    print(md)
    print(f"wrote {md_path} and {json_path}", file=sys.stderr)
    failed = any("error" in r for r in records)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
