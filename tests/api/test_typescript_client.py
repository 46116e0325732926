"""TypeScript types generated from the checked-in OpenAPI document type-check a CRM's use.

`openapi-typescript` turns openapi/openapi.json into types and `tsc` checks
tests/api/typescript/events.ts against them: a webhook handler that narrows the
published `Event` on `type` gets a typed `data` for every event type (a wrong
field is an error, a missing type fails the exhaustive `never`).

Both tools are pinned in tests/api/typescript/package-lock.json and installed
with `npm ci` into `.npm/typescript-client/` of the checkout (git ignores it),
once per lock: later runs reuse it, and npm's own cache serves reinstalls.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "openapi" / "openapi.json"
SOURCES = Path(__file__).resolve().parent / "typescript"
TOOLS = ROOT / ".npm" / "typescript-client"
NPM_TIMEOUT = 300
TOOL_TIMEOUT = 120


def _run(command: list[str], cwd: Path, timeout: int) -> None:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="session")
def node_tools() -> Path:
    """Install the pinned generator and compiler unless this lock is installed already."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is missing: `make test` installs Node.js and npm"
    lock = (SOURCES / "package-lock.json").read_bytes()
    stamp = TOOLS / ".installed"
    wanted = hashlib.sha256(lock).hexdigest()
    if not stamp.exists() or stamp.read_text(encoding="utf-8") != wanted:
        TOOLS.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(SOURCES / name, TOOLS / name)
        _run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], TOOLS, NPM_TIMEOUT)
        stamp.write_text(wanted, encoding="utf-8")
    return TOOLS / "node_modules" / ".bin"


def test_generated_types_give_each_event_type_its_typed_data(
    node_tools: Path, tmp_path: Path
) -> None:
    for name in ("events.ts", "tsconfig.json"):
        shutil.copyfile(SOURCES / name, tmp_path / name)
    _run(
        [str(node_tools / "openapi-typescript"), str(DOCUMENT), "--output", "api.ts"],
        tmp_path,
        TOOL_TIMEOUT,
    )
    _run([str(node_tools / "tsc"), "--project", "tsconfig.json"], tmp_path, TOOL_TIMEOUT)
