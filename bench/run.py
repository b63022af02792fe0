"""Benchmark runner: runs bench cases and prints their results as a table, writing JSON to bench/results/.

    python bench/run.py                 # every case (bench/bench_*.py)
    python bench/run.py ledger          # cases whose name contains "ledger"

A case module defines ``CASES``: a list of callables returning a list of result rows (dicts with at least
``case``, ``metric``, ``value``, ``unit`` and optionally ``target``). Cases set up their own data; they use
HOSTBAY_BENCH_DATABASE_URL (PostgreSQL recommended) or a temporary SQLite file.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def discover(pattern: str = ""):
    for path in sorted(HERE.glob("bench_*.py")):
        if pattern and pattern not in path.stem:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for case in getattr(mod, "CASES", []):
            yield path.stem, case


def table(rows: list[dict]) -> str:
    cols = ["case", "metric", "value", "unit", "target"]
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    pattern = argv[1] if len(argv) > 1 else ""
    rows = []
    for module, case in discover(pattern):
        started = time.perf_counter()
        got = case()
        for r in got:
            r.setdefault("module", module)
        rows.extend(got)
        print(f"{module}.{case.__name__}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    print(table(rows))
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RESULTS / f"results-{stamp}.json"
    out.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                               "rows": rows}, indent=2, default=str))
    print(f"\nwritten to {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
