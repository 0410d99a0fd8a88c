#!/usr/bin/env python3
"""Prints criterion's last results as a Markdown table: median time per iteration (with its 95 %
confidence interval), and the throughput at the median (bytes/s, or elements/s plus time per
element).

Usage: python3 benches/criterion_table.py [GROUP ...]
  GROUP: criterion group names (e.g. fanout_1kib); all groups when none is given.
Reads target/criterion/<group>/.../new/{benchmark,estimates}.json, in the order they were
written (the order the benches ran).
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "target" / "criterion"


def duration(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}" if ns / scale < 1000 else f"{ns / scale:.0f} {unit}"
    return f"{ns:.3g} ns"


def rate(per_second: float, unit: str) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.3g} {prefix}{unit}/s"
    return f"{per_second:.3g} {unit}/s"


def bytes_rate(per_second: float) -> str:
    for prefix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if per_second >= scale:
            return f"{per_second / scale:.3g} {prefix}/s"
    return f"{per_second:.3g} B/s"


def main() -> None:
    groups = sys.argv[1:]
    rows = []
    for meta in ROOT.glob("**/new/benchmark.json"):
        bench = json.loads(meta.read_text())
        if groups and bench["group_id"] not in groups:
            continue
        estimates = json.loads((meta.parent / "estimates.json").read_text())
        rows.append((meta.stat().st_mtime, bench, estimates["median"]))
    rows.sort(key=lambda row: row[0])
    print("| benchmark | median | 95 % CI | throughput at median | per element |")
    print("|---|---:|---|---:|---:|")
    for _, bench, median in rows:
        ns = median["point_estimate"]
        ci = median["confidence_interval"]
        throughput = bench.get("throughput") or {}
        per_second, per_element = "", ""
        if "Bytes" in throughput:
            per_second = bytes_rate(throughput["Bytes"] / (ns / 1e9))
        elif "Elements" in throughput:
            n = throughput["Elements"]
            per_second = rate(n / (ns / 1e9), "elem")
            per_element = duration(ns / n)
        print(
            f"| `{bench['full_id']}` | {duration(ns)} | "
            f"{duration(ci['lower_bound'])} – {duration(ci['upper_bound'])} | "
            f"{per_second} | {per_element} |"
        )


if __name__ == "__main__":
    main()
