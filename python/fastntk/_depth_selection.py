"""Choosing an MLP's depth for :mod:`fastntk.sklearn`: the kernels of every candidate depth
from one pass of the deepest network (the depth sweep), and the closed-form leave-one-out
error of kernel ridge regression (:mod:`fastntk.theory`) that picks among them.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _engine
from ._sklearn_arch import mlp
from .theory import loo_residuals_cholesky


class LeaveOneOutWarning(RuntimeWarning):
    """A candidate depth's regularized training kernel is not positive definite to working
    precision, so its closed-form leave-one-out error is undefined (reported as inf)."""


# ---------------------------------------------------------------------------------------
# The depth sweep


def kernels_by_depth(arch: dict, x: np.ndarray, name: str) -> dict:
    """{depth: training kernel (N, N)} for every candidate depth, from ONE pass of the
    deepest network: the native recursion writes the kernel after the last op of layer
    2 l for each candidate l (capture_after), so a sweep costs one evaluation and only
    the requested kernels are stored."""
    depths = arch["depths"]
    net = mlp(arch, max(depths))
    a, _ = _engine.inputs(x, None)
    program = _engine.program(net, a.shape[1])
    if len(depths) == 1:
        return {depths[0]: _engine.gram(program, a, None, (name,), layers=net.layers)[name]}
    last_op = _engine.last_ops(program)
    ops = [last_op[2 * depth] for depth in depths]  # every layer 2l is a Dense: it has an op
    out = _engine.gram(program, a, None, (name,), capture_after=ops, layers=net.layers)[
        name
    ]  # (captures, 1, N, N)
    return {depth: out[c, 0] for c, depth in enumerate(depths)}


# ---------------------------------------------------------------------------------------
# Scoring the candidates: the closed-form leave-one-out error of fastntk.theory, at one
# ridge by one Cholesky (fastntk.theory.leave_one_out covers many ridges from one eigh)


def select_depth(owner: str, kernels: dict, y2: np.ndarray, ridge: float, onehot: bool = False) -> dict:
    """Closed-form LOO error of every candidate depth's converged (t = inf) predictor.

    ridge is relative: each depth's absolute ridge is ridge * trace(K) / N of its own
    full training kernel, held fixed while a point is left out. Returns depths, loo_mse
    (mean over points and outputs of the squared LOO residual; inf where undefined), the
    chosen depth (smallest LOO MSE; the shallowest on ties), and with onehot the LOO
    accuracy (argmax of the LOO prediction y_i - residual_i).
    """
    depths = sorted(kernels)
    mse = np.empty(len(depths))
    acc = np.empty(len(depths))
    for j, depth in enumerate(depths):
        k = kernels[depth]
        lam = ridge * np.trace(k) / k.shape[0]
        res = loo_residuals_cholesky(k, y2, lam)
        if res is None:
            warnings.warn(
                f"{owner}: at depth {depth} the training kernel plus ridge is not positive definite to "
                "working precision (duplicated points without ridge?), so its leave-one-out error is "
                "undefined and recorded as inf; set ridge > 0 to score it",
                LeaveOneOutWarning,
                stacklevel=4,
            )
            mse[j], acc[j] = np.inf, np.nan
            continue
        mse[j] = np.mean(res**2)
        if onehot:
            acc[j] = np.mean(np.argmax(y2 - res, axis=1) == np.argmax(y2, axis=1))
    if not np.isfinite(mse).any():
        raise ValueError(
            f"{owner}: no candidate depth has a defined leave-one-out error (every training kernel is "
            "singular to working precision); set ridge > 0"
        )
    out = dict(depths=np.array(depths), loo_mse=mse, depth=depths[int(np.argmin(mse))])
    if onehot:
        out["loo_accuracy"] = acc
    return out
