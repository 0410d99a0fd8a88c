#!/usr/bin/env python3
"""Measures ringhub's resident memory per idle WebSocket connection.

Starts the release binary with one shard, opens N WebSocket connections (spread over 127.0.0.x
source addresses) to the echo route, or with --signalr to a configured hub (`/hubs/idle`,
methods that keep no request headers) with the JSON handshake done, lets them sit idle, and reports the growth of the
server's RSS (from /proc/PID/status) divided by N. The kernel's per-socket memory is not in the
process's RSS and is not counted, matching how peers are measured in perf-scenarios.md.

    python3 perf/idle_memory.py [--connections 5000] [--signalr] [--bin target/release/ringhub] [--json]
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

def upgrade(path):
    return (
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


# A masked text frame carrying the SignalR JSON handshake (mask key 0: payload unchanged).
HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
HANDSHAKE_FRAME = bytes([0x81, 0x80 | len(HANDSHAKE), 0, 0, 0, 0]) + HANDSHAKE


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(binary, EXTRA=()):
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--workers", "1",
         "--set", "echo.enabled=true", "--set", "diagnostics.enabled=true",
         "--set", "runtime.pin_cores=false",
         "--set", "limits.max_connections_per_ip=0", "--set", "limits.negotiate_rate_per_ip=0",
         "--set", "signalr.keepalive_interval=1h",
         # A hub like the product's: methods that do not read request headers.
         "--set", "hubs.idle.path=/hubs/idle", "--set", "hubs.idle.methods.Echo=echo",
         *EXTRA, "--set", "websocket.ping_interval=1h", "--set", "websocket.idle_timeout=2h"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "RINGHUB_LOG": "info"})
    for line in proc.stderr:
        m = re.search(r"listening.*addr=([0-9.:]+)", line)
        if m:
            host, port = m.group(1).rsplit(":", 1)
            return proc, (host, int(port))
    raise RuntimeError("server did not start")


def open_ws(addr, index, signalr):
    src = f"127.0.0.{2 + index // 4000}"
    s = socket.create_connection(addr, source_address=(src, 0))
    s.sendall(upgrade("/hubs/idle" if signalr else "/ws/echo"))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head[:80])
    if signalr:
        s.sendall(HANDSHAKE_FRAME)
        reply = head.split(b"\r\n\r\n", 1)[1]
        while b"{}\x1e" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("closed during the SignalR handshake")
            reply += chunk
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--bin", default="target/release/ringhub")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--driver", default="auto", choices=["auto", "io-uring", "legacy"])
    ap.add_argument("--signalr", action="store_true",
                    help="idle SignalR connections (handshake done) instead of raw WebSockets")
    args = ap.parse_args()
    proc, addr = start_server(args.bin, ("--set", f"runtime.driver={args.driver}"))
    try:
        # Warm up allocator pages and the runtime with a few connections first.
        warm = [open_ws(addr, i, args.signalr) for i in range(50)]
        for s in warm:
            s.close()
        time.sleep(0.5)
        before = rss_kib(proc.pid)
        conns = [open_ws(addr, i, args.signalr) for i in range(args.connections)]
        time.sleep(2.0)
        after = rss_kib(proc.pid)
        per_conn = (after - before) / args.connections
        result = {"connections": args.connections, "signalr": args.signalr, "rss_before_kib": before,
                  "rss_after_kib": after, "kib_per_connection": round(per_conn, 3)}
        if args.json:
            print(json.dumps(result))
        else:
            kind = "SignalR connections" if args.signalr else "WebSockets"
            print(f"{args.connections} idle {kind}: RSS {before} KiB -> {after} KiB, "
                  f"{per_conn:.2f} KiB per connection")
        for s in conns:
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    sys.exit(main())
