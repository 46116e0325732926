"""Run one measured operation in this process: `python -m bench.child JOB_FILE RESULT_FILE`.

The job names its operation as "module:function"; only that module is
imported, so a row's peak RSS counts what it needs and nothing else.
"""

from __future__ import annotations

import importlib
import resource
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench.job import Job, Measurement


def run(job: Job) -> Measurement:
    """Run the job's operation and add this process's peak RSS to what it measured.

    A row that runs another program (mbsync) measures that program's peak itself.
    """
    module_name, _, function_name = job.operation.partition(":")
    operation: Callable[[Job], Measurement] = getattr(
        importlib.import_module(module_name), function_name
    )
    measurement = operation(job)
    return replace(measurement, peak_rss_kb=measurement.peak_rss_kb or peak_rss_kb())


def peak_rss_kb() -> int:
    """Return this process's peak resident set size in kilobytes.

    Linux keeps `ru_maxrss` across fork and exec, so a child started by a big
    parent reports the parent's peak; VmHWM belongs to this program's memory alone.
    """
    return (
        vm_hwm_kb(Path("/proc/self/status")) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )


def vm_hwm_kb(status: Path) -> int:
    """Return VmHWM from a `/proc/<pid>/status`, or 0 without one (gone, or not Linux)."""
    return status_kb(status, "VmHWM")


def status_kb(status: Path, name: str) -> int:
    """Return the kB figure `name` (VmHWM, VmRSS...) of a `/proc/<pid>/status`, else 0."""
    try:
        text = status.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in text.splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str]) -> int:
    job_file, result_file = argv
    measurement = run(Job.from_json(Path(job_file).read_text()))
    Path(result_file).write_text(measurement.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
