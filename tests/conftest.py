"""Shared fixtures: a seeded generator, the tolerance table, and the kernel comparison helpers."""

from __future__ import annotations

import numpy as np
import pytest

# Tolerances, with where they come from.
TOL = {
    # fastntk vs tests/reference.py in float64. Both evaluate the same closed forms in
    # different algebraic arrangements; each op loses a few ulps (libm/libmvec <= 4 ulp,
    # products, one GEMM per side), and a depth-5 recursion compounds that to ~1e-14
    # of the entry scale. The issue asks for 1e-12.
    "reference": 1e-12,
    # Closed forms vs Gauss-Hermite quadrature with enough nodes for the integrand:
    # quadrature error is below 1e-13 for the smooth activations on the tested grid.
    "quadrature": 1e-11,
    # One thread vs two threads: the tiles and their order within a tile do not depend
    # on the thread count, so only the BLAS could differ, by round-off.
    "threads": 1e-13,
}


def cupy_or_skip(what: str):
    """CuPy, for a GPU test module to call at its top; skips the module (the reason names
    ``what``, or build_info()'s CUDA fields) without CuPy or without a usable CUDA device."""
    cp = pytest.importorskip("cupy", reason=f"{what} need CuPy")
    import fastntk as nt

    if not nt.has_cuda():
        info = nt.build_info()
        pytest.skip(
            f"no CUDA backend or device: build_info()['cuda_build']={info['cuda_build']}, "
            f"{info.get('cuda_note', '')}",
            allow_module_level=True,
        )
    return cp


@pytest.fixture
def rng():
    return np.random.default_rng(20261128)


def entry_scale(k: np.ndarray, diag1: np.ndarray, diag2: np.ndarray) -> np.ndarray:
    """sqrt(K(x,x) K(y,y)): the Cauchy-Schwarz bound of |K(x,y)|, the natural scale of
    each entry of a positive semi-definite kernel, used to measure relative errors."""
    return np.sqrt(np.abs(diag1)[:, None] * np.abs(diag2)[None, :])


def assert_kernel_close(actual, expected, rtol, scale=None, what="kernel"):
    """|actual - expected| <= rtol * max(|expected|, scale) entrywise."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite entries"
    ref = np.abs(expected) if scale is None else np.maximum(np.abs(expected), scale)
    err = np.abs(actual - expected)
    bad = err > rtol * ref
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(ref > 0, err / np.where(ref > 0, ref, 1), err)), err.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} entries off by more than {rtol:g} relative; worst at {i}: "
            f"actual {actual[i]!r}, expected {expected[i]!r}, scale {ref[i]!r}"
        )
