#!/usr/bin/env python3
"""Draws a line chart (SVG, no dependencies) from a perf/compare.py JSON report.

One line per server (or per metric with --metrics), x = the report's steps (subscribers,
connections, rates: whatever the scenario stepped over), y = the median of a summary metric,
with min-max whiskers.

    python3 perf/plot.py REPORT.json --metric cpu_us_per_unit --ylabel "server CPU µs per delivery" \
        --xlabel subscribers --title "S2 broadcast, 1 KB" -o perf/results/X.svg
    python3 perf/plot.py REPORT.json --server ringhub --metrics p50_us,p99_us,p999_us --log-y ...

--soak draws a loadgen soak report (`loadgen --json soak`, loadtest/soak.sh's SOAK_OUT) instead:
the server's RSS (top panel) and its open fds and connections (bottom panel) over time, the
warm-up shaded:

    python3 perf/plot.py --soak SOAK.json --title "30-minute soak" -o perf/results/X.svg
"""
import argparse
import json
import math
import sys

COLOURS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f"]


X_KEY = None


def numeric(step):
    """The x value of a step: a number, or the --x entry of a step dict (e.g. subscribers)."""
    if isinstance(step, dict):
        step = step.get(X_KEY) if X_KEY else next(iter(step.values()), None)
    try:
        return float(step)
    except (TypeError, ValueError):
        return None


def series_from(report, args):
    """[(label, [(x, median, min, max)])]"""
    rows = report["summary"]
    out = []
    if args.metrics:
        chosen = [r for r in rows if r["server"] == args.server]
        for metric in args.metrics.split(","):
            points = [(numeric(r["step"]), r[metric]) for r in chosen if r.get(metric)]
            out.append((metric.replace("_us", ""),
                        [(x, m["median"], m["min"], m["max"]) for x, m in points
                         if x is not None]))
    else:
        servers = []
        for r in rows:
            if r["server"] not in servers:
                servers.append(r["server"])
        for server in servers:
            points = [(numeric(r["step"]), r.get(args.metric)) for r in rows
                      if r["server"] == server]
            out.append((server, [(x, m["median"], m["min"], m["max"]) for x, m in points
                                 if x is not None and m]))
    return [(label, sorted(points)) for label, points in out if points]


def scale(value, lo, hi, length, log):
    if log:
        value, lo, hi = math.log10(value), math.log10(lo), math.log10(hi)
    return 0 if hi == lo else (value - lo) / (hi - lo) * length


def ticks(lo, hi, log):
    if log:
        return [10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    step = 10 ** math.floor(math.log10((hi - lo) or 1))
    while (hi - lo) / step > 8:
        step *= 2
    start = math.floor(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 2)]


def label(value):
    if value >= 1000 and value == int(value):
        return f"{int(value):,}"
    return f"{value:g}"


def draw(series, args):
    width, height, left, right, top, bottom = 720, 420, 80, 170, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p[0] for _, pts in series for p in pts]
    ys = [v for _, pts in series for p in pts for v in p[1:]]
    x_lo, x_hi = min(xs), max(xs)
    y_lo = min(ys) if args.log_y else 0
    y_hi = max(ys) * 1.08
    if args.log_y:
        y_lo = 10 ** math.floor(math.log10(min(ys)))
        y_hi = 10 ** math.ceil(math.log10(max(ys)))
    y_ticks = [t for t in ticks(y_lo, y_hi, args.log_y) if y_lo <= t <= y_hi]
    y_hi = max(y_hi, *(y_ticks or [y_hi]))
    x_ticks = sorted(set(xs))

    def px(x):
        return left + scale(x, x_lo, x_hi, plot_w, args.log_x)

    def py(y):
        return top + plot_h - scale(max(y, y_lo), y_lo, y_hi, plot_h, args.log_y)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{args.title}</text>']
    for t in y_ticks:
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label(t)}</text>')
    for t in x_ticks:
        x = px(t)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">'
                   f'{label(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#333"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 18}" text-anchor="middle">'
               f'{args.xlabel}</text>')
    out.append(f'<text transform="translate(18,{top + plot_h / 2}) rotate(-90)" '
               f'text-anchor="middle">{args.ylabel}</text>')
    for i, (name, points) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(m):.1f}"
                        for j, (x, m, _, _) in enumerate(points))
        out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, m, lo, hi in points:
            out.append(f'<line x1="{px(x):.1f}" y1="{py(lo):.1f}" x2="{px(x):.1f}" '
                       f'y2="{py(hi):.1f}" stroke="{colour}"/>')
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(m):.1f}" r="3" fill="{colour}"/>')
        ly = top + 14 + i * 20
        out.append(f'<line x1="{left + plot_w + 14}" y1="{ly - 4}" x2="{left + plot_w + 34}" '
                   f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + plot_w + 40}" y="{ly}">{name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def nice_ticks(lo, hi, most=8):
    """Ticks at 1, 2 or 5 × 10^k, as many as fit in `most`, covering lo..hi."""
    span = (hi - lo) or 1
    for exponent in range(math.floor(math.log10(span)) - 1, math.ceil(math.log10(span)) + 1):
        for mantissa in (1, 2, 5):
            step = mantissa * 10 ** exponent
            if span / step <= most:
                start = math.floor(lo / step) * step
                return [start + i * step for i in range(int(span / step) + 2)]
    return [lo, hi]


def panel(out, series, box, x_range, y_label, shade_to=None):
    """One line chart in `box` (left, top, width, height): `series` is [(name, colour,
    [(x, y)])]; x is shared (minutes), y starts at 0."""
    left, top, w, h = box
    x_lo, x_hi = x_range
    ys = [y for _, _, pts in series for _, y in pts]
    y_hi = max(ys or [1]) * 1.1 or 1
    y_ticks = [t for t in nice_ticks(0, y_hi) if t <= y_hi]

    def px(x):
        return left + scale(x, x_lo, x_hi, w, False)

    def py(y):
        return top + h - scale(y, 0, y_hi, h, False)

    if shade_to is not None and shade_to > x_lo:
        out.append(f'<rect x="{left}" y="{top}" width="{px(min(shade_to, x_hi)) - left:.1f}" '
                   f'height="{h}" fill="#f2f2f2"/>')
        out.append(f'<text x="{left + 4}" y="{top + 14}" fill="#888">warm-up</text>')
    for t in y_ticks:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{left + w}" y2="{py(t):.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{label(t)}'
                   '</text>')
    for t in nice_ticks(x_lo, x_hi, 10):
        if x_lo <= t <= x_hi:
            out.append(f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{top + h}" '
                       'stroke="#eee"/>')
            out.append(f'<text x="{px(t):.1f}" y="{top + h + 16}" text-anchor="middle">'
                       f'{label(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" '
               'stroke="#333"/>')
    out.append(f'<text transform="translate(18,{top + h / 2}) rotate(-90)" '
               f'text-anchor="middle">{y_label}</text>')
    for i, (name, colour, pts) in enumerate(series):
        path = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}"
                        for j, (x, y) in enumerate(pts))
        out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        ly = top + 14 + i * 20
        out.append(f'<line x1="{left + w + 14}" y1="{ly - 4}" x2="{left + w + 34}" '
                   f'y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + w + 40}" y="{ly}">{name}</text>')


def draw_soak(report, args):
    """Two panels over time (minutes): server RSS in MiB; server fds and connections."""
    soak = report["soak"]
    points = soak["series"]
    if len(points) < 2:
        sys.exit("nothing to plot: the soak report has fewer than two samples")
    minutes = [p["t_s"] / 60 for p in points]
    width, height, left, right, top = 760, 560, 80, 190, 40
    w, h, gap = width - left - right, 200, 60
    x_range = (0, max(minutes))
    warmup = soak["warmup_s"] / 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="15" font-weight="bold">{args.title}</text>']
    rss = [(m, p["rss_kib"] / 1024) for m, p in zip(minutes, points)]
    panel(out, [("server RSS", COLOURS[0], rss)], (left, top, w, h), x_range, "MiB",
          shade_to=warmup)
    bottom = [("server open fds", COLOURS[1],
               [(m, p["fds"]) for m, p in zip(minutes, points)])]
    conns = [(m, p["server_connections"]) for m, p in zip(minutes, points)
             if p.get("server_connections") is not None]
    if conns:
        bottom.append(("server connections", COLOURS[2], conns))
    panel(out, bottom, (left, top + h + gap, w, h), x_range, "count", shade_to=warmup)
    out.append(f'<text x="{left + w / 2}" y="{top + 2 * h + gap + 40}" text-anchor="middle">'
               f'{args.xlabel or "minutes since the start"}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--soak", action="store_true",
                    help="the report is a loadgen soak report: RSS, fds and connections "
                         "over time")
    ap.add_argument("--metric", default="cpu_us_per_unit")
    ap.add_argument("--metrics", help="comma-separated metrics of one --server instead")
    ap.add_argument("--server", default="ringhub")
    ap.add_argument("--x", help="the step parameter on the x axis (default: the first one)")
    ap.add_argument("--title", default="")
    ap.add_argument("--xlabel", default="")
    ap.add_argument("--ylabel", default="")
    ap.add_argument("--log-x", action="store_true")
    ap.add_argument("--log-y", action="store_true")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    global X_KEY
    X_KEY = args.x
    with open(args.report) as f:
        report = json.load(f)
    if args.soak:
        with open(args.output, "w") as f:
            f.write(draw_soak(report, args))
        return
    series = series_from(report, args)
    if not series:
        sys.exit("nothing to plot: no numeric steps with that metric")
    with open(args.output, "w") as f:
        f.write(draw(series, args))


if __name__ == "__main__":
    main()
