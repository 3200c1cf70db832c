"""Shared fixtures: location of the shared data, float64 for the numerical tests."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFERLAND_SHARED", REPO.parent / "shared"))
FLUXSITES = SHARED / "data" / "fluxsites"
GOLDEN = SHARED / "data" / "golden"


@pytest.fixture(scope="session")
def fluxsites_dir() -> Path:
    if not FLUXSITES.is_dir():
        pytest.fail(f"shared flux-site data not found at {FLUXSITES} (set DIFFERLAND_SHARED)")
    return FLUXSITES


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden reference data not found at {GOLDEN} (set DIFFERLAND_SHARED)")
    return GOLDEN
