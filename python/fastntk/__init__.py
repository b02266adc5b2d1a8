"""fastntk: exact infinite-width NNGP and neural tangent kernels, fast.

Build a network from layers with :func:`serial` (or an MLP by name with :func:`mlp`) and
evaluate its kernels::

    import numpy as np, fastntk as nt
    net = nt.serial(nt.Dense(512), nt.Relu(), nt.Dense(1))
    k = net.kernel(np.random.randn(100, 10))      # k.nngp, k.ntk: (100, 100) float64
    net = nt.mlp("relu", depth=3, width=512, n_out=1)  # 3 x [Dense, Relu], Dense; W_std sqrt(2)
"""

__version__ = "0.1.0"


def _load_blas() -> None:
    """Load fastntk's own OpenBLAS (the scipy-openblas32 package) before the native module.

    The native module (imported by fastntk._engine alone) links against
    libscipy_openblas.so; importing the package loads that library and the dynamic
    loader then resolves the module's dependency by its soname, wherever the two were
    installed. The copy is private to fastntk (NumPy and SciPy carry
    their own), so it is configured here, at load time, where OpenBLAS reads its
    environment:
    - kernels: OpenBLAS's own CPU detection, or FASTNTK_BLAS_CORETYPE (e.g. Haswell,
      SkylakeX) if set. A process-wide OPENBLAS_CORETYPE, meant for NumPy's copy, is
      not applied to this one;
    - threads: none of its own. fastntk calls BLAS from inside its OpenMP threads,
      one tile each, and a second thread pool would only compete with them.
    The environment is restored afterwards, so libraries loaded later see it unchanged.
    """
    import os

    saved = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")}
    coretype = os.environ.get("FASTNTK_BLAS_CORETYPE", "auto")
    try:
        if coretype.lower() == "auto":
            os.environ.pop("OPENBLAS_CORETYPE", None)
        else:
            os.environ["OPENBLAS_CORETYPE"] = coretype
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        import scipy_openblas32  # noqa: F401
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_load_blas()

from . import _engine  # noqa: E402  (isort: skip)  the native module, loaded after the BLAS
from ._engine import get_default_device, get_num_threads, set_default_device, set_num_threads  # noqa: E402
from ._matvec import LazyKernel, kernel_matvec  # noqa: E402
from .architectures import mlp  # noqa: E402
from .empirical import monte_carlo_kernel  # noqa: E402
from .interop import from_torch  # noqa: E402
from .layers import (  # noqa: E402
    ABRelu,
    Abs,
    Activation,
    AvgPool,
    Conv,
    Cos,
    Dense,
    Erf,
    Exp,
    FanInConcat,
    FanInSum,
    FanOut,
    Flatten,
    Gaussian,
    Gelu,
    GlobalAvgPool,
    GlobalSumPool,
    Identity,
    Layer,
    LayerNorm,
    LeakyRelu,
    Monomial,
    Parallel,
    Rbf,
    RectifiedMonomial,
    Relu,
    Sign,
    Sin,
    SumPool,
)
from .network import Network, parallel, serial  # noqa: E402
from .training import Linearized, TrainResult, linearize, train_mse  # noqa: E402

from . import predict, theory, training  # noqa: E402  (isort: skip)


def build_info() -> dict:
    """What this build contains: version, compiler and flags, OpenMP, BLAS, SIMD width, CUDA."""
    return _engine.build_info()


def has_cuda() -> bool:
    """True if this build has the CUDA backend (``build_info()['cuda']``) and a CUDA device is
    present: then ``net.kernel`` takes CuPy arrays, and ``device='cuda'`` runs NumPy inputs on
    the GPU. CuPy itself is needed for either (an ImportError says how to install it)."""
    return _engine.has_cuda()


__all__ = [
    "ABRelu",
    "Abs",
    "Activation",
    "AvgPool",
    "Conv",
    "Cos",
    "Dense",
    "Erf",
    "Exp",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gaussian",
    "Gelu",
    "GlobalAvgPool",
    "GlobalSumPool",
    "Identity",
    "Layer",
    "LayerNorm",
    "LazyKernel",
    "LeakyRelu",
    "Linearized",
    "Monomial",
    "Network",
    "Parallel",
    "Rbf",
    "RectifiedMonomial",
    "Relu",
    "Sign",
    "Sin",
    "SumPool",
    "TrainResult",
    "build_info",
    "from_torch",
    "get_default_device",
    "get_num_threads",
    "has_cuda",
    "kernel_matvec",
    "linearize",
    "mlp",
    "monte_carlo_kernel",
    "parallel",
    "predict",
    "serial",
    "set_default_device",
    "set_num_threads",
    "theory",
    "train_mse",
    "training",
    "__version__",
]
