"""Shared helpers of the benchmark scripts."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DAILY = ROOT.parent / "shared" / "data" / "daily"


def shared_daily() -> Path:
    """The training/evaluation data beside the project (never copied into it)."""
    if not SHARED_DAILY.is_dir():
        sys.exit(f"benchmark data not found at {SHARED_DAILY}")
    return SHARED_DAILY
