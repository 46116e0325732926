"""Lay the measured rows out as one plain-text table, each section against its reference.

A section's first row is its reference. In a throughput section the ratio is
the row's messages/s divided by the reference's (higher is better); in a
check section it is the row's wall time divided by the reference's, in a
memory section its peak RSS divided by the reference's (lower is better).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from bench.job import Measurement

_COLUMNS = ("", "wall s", "messages", "msg/s", "MB", "MB/s", "peak RSS MB", "ratio", "commands")
_MISSING = "-"
_TITLE_WIDTH = 48  # the first column lines up across sections unless a title is longer


class Ratio(Enum):
    """What a section divides by its reference row."""

    RATE = "msg/s / reference msg/s, higher is better"
    TIME = "wall time / reference wall time, lower is better"
    MEMORY = "peak RSS / reference peak RSS, lower is better"


@dataclass(frozen=True, slots=True)
class Row:
    """One measured line; without a measurement, `outcome` says why ("failed", "skipped").

    `reference` replaces the section's first row as what the ratio divides by (the
    per-server rows: each server's own raw client).
    """

    title: str
    folders: int
    measurement: Measurement | None
    note: str = ""
    outcome: str = ""
    reference: Measurement | None = None


@dataclass(slots=True)
class Section:
    """Rows of messages fetched or synced, each against the first."""

    title: str
    ratio: Ratio
    rows: list[Row] = field(default_factory=list)

    @property
    def heading(self) -> str:
        return f"{self.title} (ratio: {self.ratio.value})"

    columns = _COLUMNS

    def lines(self) -> list[list[str]]:
        return [_cells(self, row) for row in self.rows]

    def notes(self) -> list[str]:
        return [f"{row.title}: {row.note}" for row in self.rows if row.note]


@dataclass(frozen=True, slots=True)
class Latency:
    """One endpoint's requests during a load: how many, how many failed, how long they took."""

    title: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @classmethod
    def of(cls, title: str, endpoint: str, figures: dict[str, float], seconds: float) -> Latency:
        """Pick one endpoint's figures out of a load's measurement; `seconds` the load lasted."""
        return cls(
            title,
            requests=int(figures[f"{endpoint} requests"]),
            errors=int(figures[f"{endpoint} errors"]),
            seconds=seconds,
            p50_ms=figures[f"{endpoint} p50 ms"],
            p99_ms=figures[f"{endpoint} p99 ms"],
        )


@dataclass(slots=True)
class LatencySection:
    """Endpoints measured under the same load; ratios divide by the first one's percentiles."""

    title: str
    rows: list[Latency] = field(default_factory=list)
    failure: str = ""  # why there are no rows
    note: str = ""

    columns = ("", "requests", "errors", "req/s", "p50 ms", "p99 ms", "p50 ratio", "p99 ratio")

    @property
    def heading(self) -> str:
        return f"{self.title} (ratio: latency / reference latency, lower is better)"

    def lines(self) -> list[list[str]]:
        if not self.rows:
            return [["all endpoints", self.failure or "failed", *[""] * 6]]
        reference = self.rows[0]
        return [
            [
                row.title,
                f"{row.requests:,}",
                f"{row.errors:,}",
                f"{row.requests / row.seconds:,.0f}" if row.seconds else _MISSING,
                f"{row.p50_ms:.1f}",
                f"{row.p99_ms:.1f}",
                f"{row.p50_ms / reference.p50_ms:.2f}" if reference.p50_ms else _MISSING,
                f"{row.p99_ms / reference.p99_ms:.2f}" if reference.p99_ms else _MISSING,
            ]
            for row in self.rows
        ]

    def notes(self) -> list[str]:
        return [f"{self.title}: {self.note}"] if self.note else []


@dataclass(frozen=True, slots=True)
class TargetRow:
    """A figure beside its target; `verdict` says "met" or "missed"."""

    title: str
    measured: str
    target: str
    verdict: str


@dataclass(slots=True)
class TargetSection:
    """Figures measured against targets, each on its own line."""

    title: str
    rows: list[TargetRow] = field(default_factory=list)
    failure: str = ""  # why there are no rows
    note: str = ""

    columns = ("", "measured", "target", "verdict")

    @property
    def heading(self) -> str:
        return self.title

    def lines(self) -> list[list[str]]:
        if not self.rows:
            return [["all figures", self.failure or "failed", "", ""]]
        return [[row.title, row.measured, row.target, row.verdict] for row in self.rows]

    def notes(self) -> list[str]:
        return [f"{self.title}: {self.note}"] if self.note else []


class Printable(Protocol):
    """What `render` needs of a section."""

    @property
    def heading(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    def lines(self) -> list[list[str]]: ...

    def notes(self) -> list[str]: ...


def _ratio(section: Section, row: Row, measurement: Measurement) -> str:
    reference = row.reference or (section.rows[0].measurement if section.rows else None)
    if reference is None:
        return _MISSING
    if section.ratio is Ratio.RATE:
        if not reference.messages or not measurement.seconds:
            return _MISSING
        rate = measurement.messages / measurement.seconds
        return f"{rate / (reference.messages / reference.seconds):.2f}"
    if section.ratio is Ratio.MEMORY:
        return f"{measurement.peak_rss_kb / reference.peak_rss_kb:.2f}"
    if not reference.seconds:
        return _MISSING
    return f"{measurement.seconds / reference.seconds:.2f}"


def _commands(row: Row, measurement: Measurement) -> str:
    if not measurement.command_count:
        return _MISSING
    if not measurement.folder_commands and not measurement.commands:
        return str(measurement.command_count)
    per_folder = measurement.folder_commands / row.folders if row.folders else 0.0
    return f"{measurement.command_count} ({per_folder:g}/folder)"


def _cells(section: Section, row: Row) -> list[str]:
    m = row.measurement
    if m is None:
        return [row.title, row.outcome or "failed", *[""] * (len(_COLUMNS) - 2)]
    megabytes = m.bytes / 1e6
    rate = f"{m.messages / m.seconds:,.0f}" if m.messages else _MISSING
    throughput = f"{megabytes / m.seconds:.1f}" if m.bytes else _MISSING
    return [
        row.title,
        f"{m.seconds:.3f}" if m.seconds < 1 else f"{m.seconds:.2f}",
        f"{m.messages:,}",
        rate,
        f"{megabytes:.1f}" if m.bytes else _MISSING,
        throughput,
        f"{m.peak_rss_kb / 1024:.0f}",
        _ratio(section, row, m),
        _commands(row, m),
    ]


def render(header: Sequence[str], sections: Sequence[Printable]) -> str:
    """Return the header lines and every section as one table, aligned section by section."""
    out = [*header]
    for section in sections:
        table = [list(section.columns), *section.lines()]
        widths = [max(len(cells[i]) for cells in table) for i in range(len(section.columns))]
        widths[0] = max(widths[0], _TITLE_WIDTH)
        out.extend(["", section.heading])
        for first, *rest in table:
            cells = [first.ljust(widths[0])]
            cells.extend(cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True))
            out.append("  ".join(cells).rstrip())
    notes = [f"  {note}" for section in sections for note in section.notes()]
    if notes:
        out.extend(["", "Notes:", *notes])
    return "\n".join(out) + "\n"


_FLEET_COLUMNS = (
    "",
    "wall s",
    "mailboxes",
    "mbx/s",
    "mbx/min",
    "messages",
    "msg/s",
    "errors",
    "peak RSS MB",
    "ratio",
)


def worker_peaks_kb(figures: dict[str, float]) -> list[float]:
    """Pick each worker's peak RSS out of a cron-path measurement ("worker 1 peak RSS kB"...)."""
    return [
        figures[key]
        for key in sorted(figures)
        if key.startswith("worker ") and key.endswith(" peak RSS kB")
    ]


@dataclass(slots=True)
class FleetSection:
    """Rows of many mailboxes synced at once, each against the first (wall time, lower is better).

    Peak RSS is each worker's ("a / b"). Without a `reference` the ratio column is empty.
    """

    title: str
    reference: bool = True
    rows: list[Row] = field(default_factory=list)

    columns = _FLEET_COLUMNS

    @property
    def heading(self) -> str:
        return f"{self.title} (ratio: {Ratio.TIME.value})" if self.reference else self.title

    def lines(self) -> list[list[str]]:
        return [self._cells(row) for row in self.rows]

    def notes(self) -> list[str]:
        return [f"{row.title}: {row.note}" for row in self.rows if row.note]

    def _ratio(self, measurement: Measurement) -> str:
        reference = self.rows[0].measurement if self.reference and self.rows else None
        if reference is None or not reference.seconds:
            return _MISSING
        return f"{measurement.seconds / reference.seconds:.2f}"

    def _cells(self, row: Row) -> list[str]:
        m = row.measurement
        if m is None:
            return [row.title, row.outcome or "failed", *[""] * (len(_FLEET_COLUMNS) - 2)]
        mailboxes = int(m.figures.get("mailboxes", 0))
        peaks = worker_peaks_kb(m.figures) or [m.peak_rss_kb]
        rate = mailboxes / m.seconds if m.seconds else 0.0
        return [
            row.title,
            f"{m.seconds:.2f}",
            f"{mailboxes:,}",
            f"{rate:,.1f}",
            f"{rate * 60:,.0f}",
            f"{m.messages:,}",
            f"{m.messages / m.seconds:,.0f}" if m.messages and m.seconds else _MISSING,
            f"{int(m.figures.get('errors', 0)):,}",
            " / ".join(f"{kb / 1024:.0f}" for kb in peaks),
            self._ratio(m),
        ]
