"""Shared test fixtures.

``shared_dir`` points at ../shared (the project's reference data, never copied
into the repo). Without it the tests that need it are skipped with a reason;
under CI (CI=true) a missing ../shared is a failure, not a skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLOWCLI_SHARED", REPO.parent / "shared"))


def _require(path: Path) -> Path:
    if path.exists():
        return path
    msg = f"{path} is missing (the ../shared reference data sits beside the repo clone)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + "; CI=true requires it")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED)


@pytest.fixture(scope="session")
def shared_data(shared_dir) -> Path:
    return _require(shared_dir / "data")


@pytest.fixture(scope="session")
def conformance_dir(shared_dir) -> Path:
    return _require(shared_dir / "conformance")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (small tensors; extra threads only spin on a busy machine)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
