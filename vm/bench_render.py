#!/usr/bin/env python3
"""Render vm/tests/bench.sh's JSON ({"machine": {...}, "rows": [bench --json rows]}) as Markdown:
the rows table and the ratios of each method to pagemap-scan, per size and dirty fraction.

The ratios are computed here, not in `uffd-dirty bench`, so that one VM run (TCG: minutes)
gives both tables. Unknown row fields are shown as extra columns, so new bench fields appear
without a change here; only size_bytes, method, dirty_fraction and harvest_ms_median are needed.

Usage: vm/bench_render.py < bench.json
"""
import json
import sys

# (fields, header, format of a row) for what `uffd-dirty bench` has today, in its table's order.
KNOWN = [
    (["size_bytes"], "size", lambda r: size(r["size_bytes"])),
    (["method"], "method", lambda r: r["method"]),
    (["attach_ms"], "attach ms", lambda r: f"{r['attach_ms']:.1f}"),
    (["vmpte_growth_kib"], "VmPTE +KiB", lambda r: str(r["vmpte_growth_kib"])),
    (["dirty_fraction", "dirty_pages"], "dirty",
     lambda r: f"{pct(r['dirty_fraction'])} ({r['dirty_pages']} p)"),
    (["harvest_ms_median", "harvest_ms_min", "harvest_ms_max"], "harvest ms (min–max)",
     lambda r: f"{r['harvest_ms_median']:.2f} ({r['harvest_ms_min']:.2f}–{r['harvest_ms_max']:.2f})"),
    (["ms_per_gib"], "ms per GiB", lambda r: f"{r['ms_per_gib']:.2f}"),
    (["us_per_dirty_page"], "µs per dirty page",
     lambda r: "–" if r["us_per_dirty_page"] is None else f"{r['us_per_dirty_page']:.3f}"),
]
BASE = "pagemap-scan"


def size(b):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if b >= 1 << shift:
            return f"{b / (1 << shift):g} {unit}"
    return f"{b} B"


def pct(f):
    return f"{f * 100:.6g}%"


def cell(fmt, r):
    try:
        return fmt(r)
    except (KeyError, TypeError, ValueError):
        return "?"  # a field renamed or retyped in bench: show the gap, keep the rest


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main():
    doc = json.load(sys.stdin)
    m, rows = doc["machine"], doc["rows"]
    if not rows:
        sys.exit("vm/bench_render.py: the bench produced no rows")
    # Known columns whose fields exist, then every unknown field as a raw column.
    cols = [c for c in KNOWN if any(c[0][0] in r for r in rows)]
    used = {f for fields, _, _ in KNOWN for f in fields}
    extra = dict.fromkeys(k for r in rows for k in r if k not in used)  # first-seen order
    cols += [([k], k, lambda r, k=k: json.dumps(r[k]) if k in r else "–") for k in extra]
    print(
        f"Guest: kernel {m['kernel']}, {m['cpus']} CPUs, {m['mem_total_kib'] // 1024} MiB, "
        f"THP {m['thp']}. Harvest = mapping refresh + get + re-arm (median of the rounds).\n"
    )
    print(table([h for _, h, _ in cols], [[cell(f, r) for _, _, f in cols] for r in rows]))

    # Ratio of every other method's median harvest to pagemap-scan's, same size and fraction.
    def key(r):
        return (r["size_bytes"], r["dirty_fraction"])

    base = {key(r): r["harvest_ms_median"] for r in rows if r["method"] == BASE}
    others = list(dict.fromkeys(r["method"] for r in rows if r["method"] != BASE))
    median = {(r["method"], key(r)): r["harvest_ms_median"] for r in rows}
    ratio_rows = []
    for k, b in base.items():
        cells = [size(k[0]), pct(k[1])]
        for o in others:
            v = median.get((o, k))
            cells.append("–" if v is None else f"{v / max(b, 1e-6):.1f}×")
        ratio_rows.append(cells)
    if ratio_rows and others:
        print()
        print(table(["size", "dirty"] + [f"{o} ÷ {BASE}" for o in others], ratio_rows))


if __name__ == "__main__":
    main()
