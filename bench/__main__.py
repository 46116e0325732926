"""Entry point of `python -m bench` (guarded: the corpus pool re-imports the main module)."""

from __future__ import annotations

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
