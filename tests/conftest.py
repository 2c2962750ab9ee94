import os
import shutil
import subprocess

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures(...)``): on a
    shared 2-core machine two threads spin against each other."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def prometheus_installed() -> None:
    """Debian's ``prometheus`` package (prometheus + promtool), installed if it is missing.

    Needs root and apt-get (CI machines have both); elsewhere the test fails on CI and is
    skipped on a developer machine, with the command to run.
    """
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        msg = "Debian's prometheus package is missing: sudo apt-get install -y prometheus"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"apt-get install prometheus failed:\n{out.stderr[-2000:]}"
