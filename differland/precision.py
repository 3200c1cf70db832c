"""Floating-point precision switch (float32 by default, float64 on request)."""

from __future__ import annotations

import jax


def enable_float64(enabled: bool = True) -> None:
    """Run JAX in float64 (``True``) or its default float32 (``False``).

    Call before building arrays: arrays created earlier keep their dtype.
    """
    jax.config.update("jax_enable_x64", bool(enabled))
