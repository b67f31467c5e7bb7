"""A benchmark's result: rows of (measure, ours, baseline, ratio), printed and written to disk."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One measurement, ours next to the baseline's when there is one."""

    measure: str
    ours: float
    unit: str
    baseline: float | None = None
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """ours / baseline."""
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline


@dataclass
class Report:
    """All rows of one benchmark."""

    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: object, **kwargs: object) -> Row:
        row = Row(*args, **kwargs)  # type: ignore[arg-type]
        self.rows.append(row)
        return row

    def table(self) -> str:
        """The rows as a Markdown table."""
        lines = [
            f"### {self.title}",
            "",
            "| measure | ours | baseline | ours/baseline | unit | target | note |",
            "| --- | ---: | ---: | ---: | --- | --- | --- |",
        ]
        for row in self.rows:
            baseline = "" if row.baseline is None else _number(row.baseline)
            ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
            lines.append(
                f"| {row.measure} | {_number(row.ours)} | {baseline} | {ratio} | {row.unit} "
                f"| {row.target} | {row.note} |"
            )
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)

    def write(self) -> Path:
        """Write `<name>.md` and `<name>.json` under benchmarks/results/."""
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        machine = f"{platform.machine()}, {platform.python_version()}"
        header = f"Measured {stamp} on {machine}.\n\n"
        (RESULTS_DIR / f"{self.name}.md").write_text(header + self.table() + "\n", "utf-8")
        payload = {
            "name": self.name,
            "title": self.title,
            "measured_at": stamp,
            "machine": machine,
            "rows": [{**asdict(row), "ratio": row.ratio} for row in self.rows],
            "notes": self.notes,
        }
        path = RESULTS_DIR / f"{self.name}.json"
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", "utf-8")
        return path


def _number(value: float) -> str:
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"
