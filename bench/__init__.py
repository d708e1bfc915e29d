"""Benchmarks: run as `python -m bench.<name>`; they print tables and one JSON line each, never assert timings."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_sha(repo: Path = REPO) -> str:
    """The short commit of ``repo`` (this checkout by default), for a bench's JSON line;
    "unknown" outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=repo,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
