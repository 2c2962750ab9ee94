"""Tests of stream_app.heap.keep_heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream_app.heap import keep_heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_heap_applies_on_glibc_and_can_be_turned_off(monkeypatch) -> None:
    # in a child process: mallopt changes the whole process's allocator
    code = "from stream_app.heap import keep_heap; print(keep_heap())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    monkeypatch.setenv("RISKMON_KEEP_HEAP", "0")
    assert keep_heap() is False
