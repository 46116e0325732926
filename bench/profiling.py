"""Profile one first sync with pyinstrument, to see where its time goes before optimising.

Writes `<profile_path>.txt` (functions by own time, our functions by time
including callees, then the whole call tree) and `<profile_path>.html` (the
interactive tree). The sampler slows the run down, so its timing is not put
in the table.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pyinstrument import Profiler
from pyinstrument.frame import Frame

from bench.job import Job, Measurement
from bench.ours import sync_with_ours

_SAMPLE_INTERVAL = 0.001
_LISTED = 30
_OUR_CODE = "app/"


def profile_sync(job: Job) -> Measurement:
    """Run `sync_with_ours` under the sampler and write its reports next to `profile_path`."""
    assert job.profile_path is not None
    profiler = Profiler(interval=_SAMPLE_INTERVAL)
    profiler.start()
    try:
        measurement = sync_with_ours(job)
    finally:
        profiler.stop()
    root = profiler.last_session.root_frame() if profiler.last_session else None
    base = Path(job.profile_path)
    sections = []
    if root is not None:
        sections += [
            _listing("Functions by own time (seconds)", _own_times(root)),
            _listing("Our functions by time including callees (seconds)", _inclusive_times(root)),
        ]
    sections.append(f"Call tree\n{profiler.output_text(show_all=True)}")
    base.with_suffix(".txt").write_text("\n\n".join(sections))
    base.with_suffix(".html").write_text(profiler.output_html())
    return measurement


def _name(frame: Frame) -> str:
    return f"{frame.function}  {frame.file_path_short}:{frame.line_no}"


def _own_times(root: Frame) -> dict[str, float]:
    """Sum each function's own time over every place it is called from."""
    totals: defaultdict[str, float] = defaultdict(float)
    pending = [root]
    while pending:
        frame = pending.pop()
        if not frame.is_synthetic:
            totals[_name(frame)] += frame.total_self_time
            pending.extend(frame.children)
    return totals


def _inclusive_times(root: Frame) -> dict[str, float]:
    """Sum the time of each of our functions with its callees, counting recursion once."""
    totals: defaultdict[str, float] = defaultdict(float)
    pending: list[tuple[Frame, frozenset[str]]] = [(root, frozenset())]
    while pending:
        frame, above = pending.pop()
        if frame.is_synthetic:
            continue
        name = _name(frame)
        if (frame.file_path_short or "").startswith(_OUR_CODE) and name not in above:
            totals[name] += frame.time
        pending.extend((child, above | {name}) for child in frame.children)
    return totals


def _listing(title: str, totals: dict[str, float]) -> str:
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:_LISTED]
    lines = [f"{seconds:8.3f}  {name}" for name, seconds in ranked]
    return "\n".join([title, *lines])
