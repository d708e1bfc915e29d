"""Subcommands of ``weft`` (being built: see the issue tracker)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this module's subcommands (none yet)."""
