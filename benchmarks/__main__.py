"""`make bench` / `python -m benchmarks [name ...]`: run benchmarks, print and save their tables.

Each module `benchmarks/bench_<name>.py` exposes `run() -> Report`. Results go to
`benchmarks/results/<name>.md` and `.json`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks


def available() -> list[str]:
    return sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available()}", file=sys.stderr)
        return 2
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"running benchmark {name} ...", flush=True)
        report = module.run()
        path = report.write()
        print(report.table())
        print(f"(saved to {path})\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
