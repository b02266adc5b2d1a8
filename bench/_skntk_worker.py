"""scikit-learn's GaussianProcessRegressor with scikit-ntk's kernel, for bench_sklearn.py's
section 4, in the peer's own virtual environment.

    PEER_PYTHON bench/_skntk_worker.py DATA.npz

DATA holds x, y (training) and xt (test points). The worker imports only NumPy, scikit-learn
and scikit-ntk (nothing of fastntk or bench/), then answers one JSON command per line on
stdin with one JSON line on stdout:

- {"cmd": "fit", "depth": D}: fits GaussianProcessRegressor(skntk.NeuralTangentKernel(D,
  bias=0.1), alpha=1e-2, normalize_y=True) (scikit-learn's default L-BFGS-B, default bounds)
  and answers seconds (the fit's wall time), bias, lml, versions.
- {"cmd": "check", "depth": D, "bias": B, "save": PATH}: for the last fit of depth D, its log
  marginal likelihood at bias B; saves to PATH (.npz) the predictions (mean, std at xt) of
  that fit and of the same GP with the kernel fixed at bias B (optimizer=None).
- {"cmd": "quit"}.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import skntk
import sklearn
from sklearn.gaussian_process import GaussianProcessRegressor

ALPHA = 1e-2


def main():
    data = np.load(sys.argv[1])
    x, y, xt = data["x"], data["y"], data["xt"]
    fitted = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        depth = int(cmd["depth"])
        if cmd["cmd"] == "fit":
            gp = GaussianProcessRegressor(skntk.NeuralTangentKernel(depth, bias=0.1), alpha=ALPHA, normalize_y=True)
            t = time.perf_counter()
            gp.fit(x, y)
            seconds = time.perf_counter() - t
            fitted[depth] = gp
            reply = dict(
                seconds=seconds,
                bias=float(gp.kernel_.bias),
                lml=float(gp.log_marginal_likelihood_value_),
                versions=dict(numpy=np.__version__, sklearn=sklearn.__version__, python=sys.version.split()[0]),
            )
        elif cmd["cmd"] == "check":
            gp, bias = fitted[depth], float(cmd["bias"])
            fixed = GaussianProcessRegressor(
                skntk.NeuralTangentKernel(depth, bias=bias, bias_bounds="fixed"),
                alpha=ALPHA,
                normalize_y=True,
                optimizer=None,
            ).fit(x, y)
            mean_t, std_t = gp.predict(xt, return_std=True)
            mean_f, std_f = fixed.predict(xt, return_std=True)
            np.savez(cmd["save"], mean_t=mean_t, std_t=std_t, mean_f=mean_f, std_f=std_f)
            reply = dict(lml_at_bias=float(gp.log_marginal_likelihood(np.log([bias]))))
        else:
            raise ValueError(f"unknown command {cmd!r}")
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
