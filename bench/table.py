"""Lay the measured rows out as one plain-text table, each section against its reference.

A section's first row is its reference. In a throughput section the ratio is
the row's messages/s divided by the reference's (higher is better); in a
check section it is the row's wall time divided by the reference's (lower is
better).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from bench.job import Measurement

_COLUMNS = ("", "wall s", "messages", "msg/s", "MB", "MB/s", "peak RSS MB", "ratio", "commands")
_MISSING = "-"


class Ratio(Enum):
    """What a section divides by its reference row."""

    RATE = "msg/s / reference msg/s, higher is better"
    TIME = "wall time / reference wall time, lower is better"


@dataclass(frozen=True, slots=True)
class Row:
    """One measured line; without a measurement, `outcome` says why ("failed", "skipped")."""

    title: str
    folders: int
    measurement: Measurement | None
    note: str = ""
    outcome: str = ""


@dataclass(slots=True)
class Section:
    title: str
    ratio: Ratio
    rows: list[Row] = field(default_factory=list)


def _ratio(section: Section, measurement: Measurement) -> str:
    reference = section.rows[0].measurement if section.rows else None
    if reference is None:
        return _MISSING
    if section.ratio is Ratio.RATE:
        if not reference.messages or not measurement.seconds:
            return _MISSING
        rate = measurement.messages / measurement.seconds
        return f"{rate / (reference.messages / reference.seconds):.2f}"
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
        _ratio(section, m),
        _commands(row, m),
    ]


def render(header: Sequence[str], sections: Sequence[Section]) -> str:
    """Return the header lines and every section as one aligned table."""
    lines: list[list[str] | str] = []
    for section in sections:
        lines.append(f"{section.title} (ratio: {section.ratio.value})")
        lines.append(list(_COLUMNS))
        lines.extend(_cells(section, row) for row in section.rows)
    table = [cells for cells in lines if isinstance(cells, list)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(_COLUMNS))]
    out = [*header, ""]
    for line in lines:
        if isinstance(line, str):
            if out[-1] != "":
                out.append("")
            out.append(line)
            continue
        first, *rest = line
        cells = [first.ljust(widths[0])]
        cells.extend(cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True))
        out.append("  ".join(cells).rstrip())
    notes = [f"  {row.title}: {row.note}" for s in sections for row in s.rows if row.note]
    if notes:
        out.extend(["", "Notes:", *notes])
    return "\n".join(out) + "\n"
