"""What the build reports, and that the recursion really is vectorized."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import fastntk as nt


def test_build_info_reports_the_build():
    info = nt.build_info()
    assert info["version"] == nt.__version__
    assert info["openmp"] > 0 and info["max_threads"] >= 1
    assert info["blas"] and info["blas_core"]
    assert info["simd"] in ("AVX-512", "AVX2", "SSE2", "NEON", "scalar")
    assert info["simd_doubles"] == {"AVX-512": 8, "AVX2": 4, "SSE2": 2, "NEON": 2, "scalar": 1}[info["simd"]]
    assert isinstance(info["simd_dispatch"], bool)
    assert info["cuda"] is nt.has_cuda() is False


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs binutils' nm")
def test_transcendentals_are_vectorized():
    """With glibc's libmvec the extension imports the vector variants of acos, asin,
    atan2 and exp at the SIMD width it runs with (in a portable build: the clone the
    CPU selects): the linker only pulls in those the vectorizer actually called from
    the recursion loops."""
    info = nt.build_info()
    if not info["libmvec"]:
        pytest.skip("built without libmvec")
    isa = {"AVX-512": "eN8", "AVX2": "dN4", "SSE2": "bN2"}.get(info["simd"])
    if isa is None:
        pytest.skip(f"no libmvec ABI for {info['simd']}")
    symbols = subprocess.run(
        ["nm", "-D", nt._core.__file__], capture_output=True, text=True, check=True
    ).stdout
    for fn in ("v_acos", "v_asin", "vv_atan2", "v_exp"):
        assert f"_ZGV{isa}{fn}" in symbols, (
            f"_ZGV{isa}{fn} not imported: the loop calling {fn} was not vectorized"
        )
