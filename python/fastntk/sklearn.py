"""scikit-learn front end: estimators that predict like infinitely wide networks, and GP kernels.

Estimators (``fit`` / ``predict`` / ``score``, usable in pipelines and grid searches):

- :class:`NTKRegressor`, :class:`NTKClassifier`: the mean prediction of an infinite ensemble of
  infinitely wide MLPs trained by gradient flow on MSE from zero outputs (the NTK dynamics);
  the classifier trains on one-hot targets, as in the NTK literature;
- :class:`NNGPRegressor`: the same with the NNGP as the kernel of the flow (Neural Tangents'
  ``get='nngp'``: only the last layer is trained);
- :class:`MLPGaussianProcessRegressor`: Gaussian-process regression with the NTK or NNGP of an
  MLP whose ``W_std``, ``b_std``, noise and depth are fitted by maximum marginal likelihood.

Kernels for :mod:`sklearn.gaussian_process`, with analytic gradients in their hyperparameters:

- :class:`NTK`, :class:`NNGP`: the kernels of an MLP, hyperparameters ``W_std`` and ``b_std``;
- :class:`NeuralTangentKernel`: a drop-in replacement for scikit-ntk's kernel of the same name
  (same parameters, same numbers; see its docstring for where it deliberately differs).

The MLP behind all of them is ``Dense, act, Dense, act, ..., Dense`` with ``depth`` activations
(hidden layers), every Dense layer with the same ``W_std`` and ``b_std``, in Neural Tangents'
conventions (DESIGN.md section 2.1): the input kernel is ``x . y / d``. The kernels do not
standardize the inputs; put a :class:`~sklearn.preprocessing.StandardScaler` in front when the
features have different scales.

Requires scikit-learn >= 1.6. Import it as ``import fastntk.sklearn``.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.linalg
import scipy.linalg.blas
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _engine
from . import predict as _predict
from ._depth_selection import LeaveOneOutWarning, kernels_by_depth, select_depth
from ._sklearn_arch import check_architecture, check_int, check_real, mlp
from .layers import Dense, Relu
from .network import Network

__all__ = [
    "NNGP",
    "NNGPRegressor",
    "NTK",
    "NTKClassifier",
    "NTKRegressor",
    "LeaveOneOutWarning",
    "MLPGaussianProcessRegressor",
    "NeuralTangentKernel",
]

# He initialization: with W_std^2 = 2 a ReLU layer keeps each point's variance q, so the
# kernels neither vanish nor explode with depth and changing depth does not rescale them.
_W_STD = 2.0**0.5
# A small bias: without one, ReLU kernels are positively homogeneous (k(cx, y) = c k(x, y)),
# so points on a ray through the origin could not be told apart.
_B_STD = 0.1
_DEPTH = 2
_WIDTH = 512  # Neural Tangents' customary hidden width; used by the standard parameterization only


# ---------------------------------------------------------------------------------------
# Estimators


class _NetworkEstimator(BaseEstimator):
    """Shared fit/predict of the three estimators: kernel regression by gradient flow."""

    _kernel_name = "ntk"

    def _checked(self):
        owner = type(self).__name__
        arch = check_architecture(
            owner,
            depth=self.depth,
            activation=self.activation,
            W_std=self.W_std,
            b_std=self.b_std,
            parameterization=getattr(self, "parameterization", "ntk"),
            width=getattr(self, "width", None),
        )
        t = None if self.t is None else check_real(owner, "t", self.t, low=0.0, allow_inf=True)
        if t is not None and np.isinf(t):
            t = None  # converged: the same closed form, solved directly
        ridge = check_real(owner, "ridge", self.ridge, low=0.0)
        return arch, t, ridge

    def _fit_targets(self, X, y2, onehot: bool):
        """Check the parameters, pick the depth, and store the dual coefficients
        ``dual_coef_`` (N, n_out) of the prediction ``K(x, X_fit_) @ dual_coef_``."""
        owner = type(self).__name__
        arch, t, ridge = self._checked()
        for stale in ("depths_", "loo_mse_", "loo_accuracy_"):  # from an earlier fit with a sweep
            self.__dict__.pop(stale, None)
        kernels = kernels_by_depth(arch, X, self._kernel_name)
        if len(arch["depths"]) > 1:
            chosen = select_depth(owner, kernels, y2, ridge, onehot=onehot)
            self.depths_ = chosen["depths"]
            self.loo_mse_ = chosen["loo_mse"]
            if onehot:
                self.loo_accuracy_ = chosen["loo_accuracy"]
            self.depth_ = int(chosen["depth"])
        else:
            self.depth_ = arch["depths"][0]
        k = kernels[self.depth_]
        del kernels
        n = k.shape[0]
        # The test prediction of gradient flow from zero outputs is linear in the test kernel,
        # f_t(x) = K(x, X) A^+ (I - exp(-A t / n)) y with A = K + ridge trace(K)/N I: with the
        # identity as the "test kernel", fastntk.predict returns that vector of coefficients.
        predict_fn = _predict.gradient_descent_mse(k, y2, learning_rate=1.0, diag_reg=ridge)
        self.dual_coef_ = predict_fn(t=t, fx_train_0=None, fx_test_0=0.0, k_test_train=np.eye(n))
        self.X_fit_ = X
        self._fit_arch = arch

    def _decision(self, X):
        check_is_fitted(self, "dual_coef_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        net = mlp(self._fit_arch, self.depth_)
        return _predict_kernel(net, X, self.X_fit_, self._kernel_name, self.dual_coef_)


def _predict_kernel(net: Network, x: np.ndarray, x_train: np.ndarray, name: str, dual_coef: np.ndarray):
    """K(x, x_train) @ dual_coef, in row blocks of at most ~2^23 kernel entries (64 MiB),
    so predicting many points never holds their whole cross kernel."""
    n_train = x_train.shape[0]
    rows = max(1, (1 << 23) // max(n_train, 1))
    a_train = np.ascontiguousarray(x_train, dtype=np.float64)
    out = np.empty((x.shape[0],) + dual_coef.shape[1:], dtype=np.float64)
    program = _engine.program(net, a_train.shape[1])
    for start in range(0, x.shape[0], rows):
        a, _ = _engine.inputs(x[start : start + rows], None)
        k = _engine.gram(program, a, a_train, (name,), layers=net.layers)[name]
        out[start : start + rows] = k @ dual_coef
    return out


_ESTIMATOR_PARAMETERS = """
    depth : int or sequence of int, default=2
        Hidden layers (activations) of the MLP ``Dense, act, ..., act, Dense``. With a
        sequence, ``fit`` evaluates the kernels of every candidate depth in ONE pass of the
        deepest network and keeps the depth with the smallest exact leave-one-out squared
        error of the converged (t = inf) ridge regression, in closed form
        (``residual_i = (A^-1 y)_i / (A^-1)_ii`` with ``A = K + ridge trace(K)/N I``, the
        ridge held fixed at its full-data value); ties go to the shallowest. The criterion
        is that of the converged predictor whatever ``t``. A sweep holds one N x N kernel
        per candidate and factors each (O(N^3) per candidate).
    activation : str or fastntk activation layer, default='relu'
        One of 'relu', 'leaky_relu' (slope 0.1), 'erf', 'gelu', 'abs', 'sign', 'sin', 'cos',
        'rbf', 'identity' (a deep linear network) (``fastntk.architectures.ACTIVATIONS``), or
        a layer such as ``fastntk.LeakyRelu(0.3)``.
    W_std : float, default=sqrt(2)
        Weight standard deviation of every Dense layer, > 0. The default is He's for ReLU:
        it keeps each point's variance constant through the layers.
    b_std : float or None, default=0.1
        Bias standard deviation of every Dense layer, >= 0; None for no bias."""

_ESTIMATOR_TRAINING = """
    t : float or None, default=None
        Training time of gradient flow, >= 0; None (or inf) = trained to convergence. In Neural
        Tangents' units: learning rate 1 on the loss ``||f - y||^2 / (2 y.size)``, so the
        training outputs move as ``exp(-K t / y.size)``.
    ridge : float, default=0.0
        Ridge, relative to the kernel's scale: ``ridge * trace(K) / N`` is added to the
        training kernel's diagonal (Neural Tangents' ``diag_reg``). 0: the network itself,
        ridgeless; a training kernel singular to working precision (duplicated points) is
        then solved with the pseudo-inverse and a ``SingularKernelWarning``."""

_ESTIMATOR_ATTRIBUTES = """
    Attributes
    ----------
    depth_ : int
        The depth used (``depth`` itself when it is an int).
    depths_ : ndarray of int
        The candidate depths, ascending (only when ``depth`` is a sequence).
    loo_mse_ : ndarray of float
        The leave-one-out mean squared error of each candidate depth (only when ``depth`` is a
        sequence; inf where the regularized kernel is singular, with a ``LeaveOneOutWarning``).
    dual_coef_ : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        Predictions are ``K(x, X_fit_) @ dual_coef_``.
    X_fit_ : ndarray of shape (n_samples, n_features)
        The training inputs (float64).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has feature names."""


def _doc(text: str) -> str:
    return (
        text.replace("{PARAMETERS}", _ESTIMATOR_PARAMETERS.strip("\n"))
        .replace("{TRAINING}", _ESTIMATOR_TRAINING.strip("\n"))
        .replace("{ATTRIBUTES}", _ESTIMATOR_ATTRIBUTES.strip("\n"))
    )


_NTK_ARCH = """
    parameterization : {'ntk', 'standard'}, default='ntk'
        Parameterization of the Dense layers (Neural Tangents' meaning). The standard one's
        NTK grows with the hidden width, so ``t`` means a different time scale there.
    width : int, default=512
        Hidden width; only the standard parameterization's NTK depends on it (ignored with
        'ntk')."""


class _NTKEstimator(_NetworkEstimator):
    """The parameters of the NTK estimators (regressor and classifier): the architecture in
    either parameterization, the training time and the ridge."""

    def __init__(
        self,
        depth=_DEPTH,
        activation="relu",
        W_std=_W_STD,
        b_std=_B_STD,
        parameterization="ntk",
        width=_WIDTH,
        t=None,
        ridge=0.0,
    ):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = parameterization
        self.width = width
        self.t = t
        self.ridge = ridge


class NTKRegressor(RegressorMixin, _NTKEstimator):
    __doc__ = _doc(
        """Regression by an infinitely wide MLP trained by gradient flow on MSE (the NTK).

    Predicts the mean over random initializations (the infinite ensemble) of the trained
    network, from zero initial outputs: ``f_t(x) = K(x, X) A^+ (I - exp(-A t / n)) y`` with
    ``K`` the NTK, ``A = K + ridge trace(K)/N I`` and ``n = y.size``; at ``t=None`` this is
    kernel (ridge) regression ``K(x, X) A^-1 y``. Multi-output targets are independent columns.

    Parameters
    ----------
{PARAMETERS}"""
        + _NTK_ARCH
        + """
{TRAINING}

{ATTRIBUTES}
    """
    )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Fit to inputs X (n_samples, n_features) and targets y (n_samples,) or
        (n_samples, n_outputs). Returns self."""
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        y2 = y[:, None] if y.ndim == 1 else y
        self._fit_targets(X, y2, onehot=False)
        if y.ndim == 1:
            self.dual_coef_ = self.dual_coef_[:, 0]
        return self

    def predict(self, X):
        """Predictions at X (n_samples, n_features): (n_samples,) or (n_samples, n_outputs)
        like the training targets."""
        return self._decision(X)


class NNGPRegressor(RegressorMixin, _NetworkEstimator):
    __doc__ = _doc(
        """Regression by the NNGP: an infinitely wide MLP whose last layer alone is trained.

    As :class:`NTKRegressor` with the NNGP as the kernel of the flow (Neural Tangents'
    ``get='nngp'`` dynamics): ``f_t(x) = K(x, X) A^+ (I - exp(-A t / n)) y``; at ``t=None``
    the posterior mean of the network's Gaussian process (ridge = the noise variance,
    relative to the kernel's scale).

    Parameters
    ----------
{PARAMETERS}
{TRAINING}

{ATTRIBUTES}
    """
    )

    _kernel_name = "nngp"

    def __init__(self, depth=_DEPTH, activation="relu", W_std=_W_STD, b_std=_B_STD, t=None, ridge=0.0):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.t = t
        self.ridge = ridge

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    fit = NTKRegressor.fit
    predict = NTKRegressor.predict


class NTKClassifier(ClassifierMixin, _NTKEstimator):
    __doc__ = _doc(
        """Classification by an infinitely wide MLP trained by gradient flow on one-hot targets.

    As in the NTK literature, the network regresses the one-hot encoding of the classes with
    MSE (one output per class, independent columns, the same dynamics as
    :class:`NTKRegressor`) and predicts the class of the largest output. Its outputs are not
    probabilities, so there is no ``predict_proba``; ``decision_function`` returns them.

    Parameters
    ----------
{PARAMETERS}"""
        + _NTK_ARCH
        + """
{TRAINING}

{ATTRIBUTES}
    loo_accuracy_ : ndarray of float
        With a sequence of depths: the leave-one-out accuracy of each (the argmax of the
        closed-form leave-one-out outputs); the depth is chosen by ``loo_mse_`` on the
        one-hot targets, the loss the network is trained on.
    classes_ : ndarray
        The class labels.
    """
    )

    def fit(self, X, y):
        """Fit to inputs X (n_samples, n_features) and labels y (n_samples,). Returns self."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        onehot = np.zeros((X.shape[0], len(self.classes_)))
        onehot[np.arange(X.shape[0]), index] = 1.0
        self._fit_targets(X, onehot, onehot=True)
        return self

    def decision_function(self, X):
        """The network's outputs at X: (n_samples, n_classes), or for two classes
        (n_samples,), the second class's output minus the first's (> 0: ``classes_[1]``)."""
        f = self._decision(X)
        if len(self.classes_) == 2:
            return f[:, 1] - f[:, 0]
        return f

    def predict(self, X):
        """The class of the largest output at each row of X."""
        f = self._decision(X)
        return self.classes_[np.argmax(f, axis=1)]


# ---------------------------------------------------------------------------------------
# Gaussian-process kernels


class _MLPKernel(Kernel):
    """Shared implementation of :class:`NTK` and :class:`NNGP`."""

    _kernel_name = "ntk"

    def __init__(
        self,
        depth=_DEPTH,
        activation="relu",
        W_std=_W_STD,
        b_std=_B_STD,
        W_std_bounds=(1e-2, 1e2),
        b_std_bounds=(1e-5, 1e5),
    ):
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.W_std_bounds = W_std_bounds
        self.b_std_bounds = b_std_bounds

    @property
    def hyperparameter_W_std(self):
        return Hyperparameter("W_std", "numeric", self.W_std_bounds)

    @property
    def hyperparameter_b_std(self):
        return Hyperparameter("b_std", "numeric", self.b_std_bounds)

    def _network(self):
        owner = type(self).__name__
        if self.b_std is None:
            raise TypeError(f"{owner}: b_std must be a real number >= 0 (a hyperparameter), got None")
        arch = check_architecture(
            owner,
            depth=self.depth,
            activation=self.activation,
            W_std=self.W_std,
            b_std=self.b_std,
            allow_sequence=False,
        )
        return mlp(arch, arch["depths"][0]), arch

    def __call__(self, X, Y=None, eval_gradient=False):
        """The kernel k(X, Y) and, optionally, its gradient in the log-hyperparameters.

        Parameters
        ----------
        X : ndarray of shape (n_samples_X, n_features)
        Y : ndarray of shape (n_samples_Y, n_features), default=None
            None: k(X, X), computed with the symmetry. Otherwise only the N x M cross kernel
            is computed.
        eval_gradient : bool, default=False
            Also return the derivatives with respect to the log of each non-fixed
            hyperparameter (W_std, then b_std), computed in the same pass as the kernel by
            forward-mode derivatives through the layer recursion. Only when Y is None.

        Returns
        -------
        K : ndarray of shape (n_samples_X, n_samples_Y), float64
        K_gradient : ndarray of shape (n_samples_X, n_samples_X, n_dims), float64
            Only with eval_gradient; ``dK/dlog W_std = 2 W_std^2 dK/d(W_std^2)`` and
            likewise for b_std.
        """
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        net, arch = self._network()
        name = self._kernel_name
        a1, a2 = _engine.inputs(X, Y)
        program = _engine.program(net, a1.shape[1])
        if not eval_gradient:
            return _engine.gram(program, a1, a2, (name,), layers=net.layers)[name]
        directions = []
        for h in self.hyperparameters:
            if h.fixed:
                continue
            if h.name == "W_std":
                directions.append((0, 2.0 * arch["W_std"] ** 2))  # d(W^2)/dlog W
            else:
                directions.append((1, 2.0 * arch["b_std"] ** 2))  # d(b^2)/dlog b
        if not directions:
            k = _engine.gram(program, a1, None, (name,), layers=net.layers)[name]
            return k, np.empty((k.shape[0], k.shape[0], 0))
        seeds = _engine.dense_seeds(program, directions)
        out = _engine.gram(program, a1, None, (name,), seeds=seeds, layers=net.layers)[
            name
        ]  # (1, 1 + P, N, N)
        # A view, not a copy: the GP's einsum over the gradient runs as fast on it (measured
        # faster at N = 2000 than on a C-ordered copy, and the copy alone costs more than the kernel).
        return out[0, 0], np.moveaxis(out[0, 1:], 0, -1)

    def diag(self, X):
        """k(x, x) for each row of X, shape (n_samples_X,): O(n_samples_X n_features), from
        the exact diagonal maps (equal to the diagonal of ``self(X)``)."""
        net, _ = self._network()
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array of shape (N, d), got shape {X.shape}")
        a = _engine.as_input(X, "X")
        nngp, ntk = _engine.diagonal(_engine.program(net, a.shape[1]), a, net.layers)
        return ntk if self._kernel_name == "ntk" else nngp

    def is_stationary(self):
        """False: the kernels depend on the inputs' norms and angle, not their difference."""
        return False

    def __repr__(self):
        return (
            f"{type(self).__name__}(depth={self.depth!r}, activation={self.activation!r}, "
            f"W_std={self.W_std:.4g}, b_std={self.b_std:.4g})"
            if isinstance(self.W_std, numbers.Real) and isinstance(self.b_std, numbers.Real)
            else f"{type(self).__name__}(depth={self.depth!r}, activation={self.activation!r}, "
            f"W_std={self.W_std!r}, b_std={self.b_std!r})"
        )


_KERNEL_DOC = """{what}

    The MLP ``Dense, act, ..., act, Dense`` with ``depth`` activations, every Dense layer
    with the same ``W_std`` and ``b_std`` (Neural Tangents' ntk parameterization; input
    kernel ``x . y / d``). Use it in :class:`~sklearn.gaussian_process.GaussianProcessRegressor`
    or ``GaussianProcessClassifier``, alone or combined with other kernels
    (``ConstantKernel() * {name}() + WhiteKernel()``); the optimizer tunes W_std and b_std
    on a log scale with the analytic gradients.

    Parameters
    ----------
    depth : int, default=2
        Hidden layers (activations), >= 0.
    activation : str or fastntk activation layer, default='relu'
        As the estimators' (e.g. 'relu', 'erf', 'gelu', or ``fastntk.LeakyRelu(0.1)``).
    W_std : float, default=sqrt(2)
        Weight standard deviation, > 0 (a hyperparameter).
    b_std : float, default=0.1
        Bias standard deviation, >= 0 (a hyperparameter; keep it > 0 unless fixed: the
        optimizer works on log b_std).
    W_std_bounds, b_std_bounds : pair of floats > 0 or 'fixed', default=(1e-2, 1e2), (1e-5, 1e5)
        Bounds of the hyperparameters; 'fixed' keeps one out of the optimization.
    """


class NTK(_MLPKernel):
    __doc__ = _KERNEL_DOC.format(
        what="The neural tangent kernel of an infinitely wide MLP, as a GP kernel.", name="NTK"
    )
    _kernel_name = "ntk"


class NNGP(_MLPKernel):
    __doc__ = _KERNEL_DOC.format(
        what="The NNGP kernel (the covariance of an infinitely wide MLP's outputs), as a GP kernel.",
        name="NNGP",
    )
    _kernel_name = "nngp"


class NeuralTangentKernel(Kernel):
    """Drop-in replacement for scikit-ntk's ``skntk.NeuralTangentKernel``: same parameters,
    same numbers, computed by fastntk's fused recursion.

    scikit-ntk's NTK of a ReLU MLP with ``depth`` hidden layers: raw inner products
    ``S0 = x . z`` (no 1/d), ReLU layers with weight variance 2 and no bias in the NNGP, and
    a ``bias`` that multiplies zero-initialized biases, so ``bias^2`` enters the NTK at every
    layer: ``K0 = S0 + bias^2``, ``S_h = 2 E[relu(u) relu(v)]``, ``K_h = K_{h-1} S'_h + S_h +
    bias^2``, returned as ``K_depth / ((depth + 1)(1 + bias^2))``. Here that is the program
    ``Dense(W_std=sqrt(d), ntk_bias=bias)`` then ``depth`` times ``[Relu, Dense(W_std=sqrt(2),
    ntk_bias=bias)]``, then the scale. The raw kernel is exactly affine in bias^2, so its
    gradient in log(bias) is exact from a second plain pass at another bias (faster than the
    forward-mode derivative path, see ``__call__``), plus the scale's own derivative.

    Parameters
    ----------
    depth : int
        Hidden (ReLU) layers, >= 0.
    bias : float, default=0.1
        The bias scale beta, >= 0 (the hyperparameter).
    bias_bounds : pair of floats > 0 or 'fixed', default=(1e-5, 1e5)

    Notes
    -----
    Where it deliberately differs from scikit-ntk 1.2.1 (values agree to ~1e-8 relative
    elsewhere, the limit of scikit-ntk's own arccos near correlation 1):

    - ``k(X, Z)`` computes the N x M cross kernel only; scikit-ntk computes the kernel of the
      stacked (N + M) points and slices it (same numbers, (N + M)^2 work).
    - ``k(X, Z, eval_gradient=True)`` raises ValueError as scikit-learn's kernels do;
      scikit-ntk returns the (N + M) x (N + M) kernel of the stacked points instead.
    - ``diag(X)`` costs O(N d); scikit-ntk forms the whole matrix.
    - Antipodal inputs (x = -c z, no NNGP bias): the gradient is the exact, finite limit;
      scikit-ntk's divides by the product of the ReLU derivatives, which is 0 there, and
      returns NaN (with a divide-by-zero warning).
    - Zero-norm inputs, or pairs whose norms' product is below 1e-10: scikit-ntk clips that
      product at 1e-10, which gives zero inputs a spurious covariance of ~3e-11 and tiny
      inputs wrong correlations; here the exact kernel (a zero input has zero covariance and
      angle pi/2 with everything, as in Neural Tangents).
    """

    def __init__(self, depth, bias=0.1, bias_bounds=(1e-5, 1e5)):
        self.depth = depth
        self.bias = bias
        self.bias_bounds = bias_bounds

    @property
    def hyperparameter_bias(self):
        return Hyperparameter("bias", "numeric", self.bias_bounds)

    def _checked(self):
        owner = type(self).__name__
        return check_int(owner, "depth", self.depth, low=0), check_real(owner, "bias", self.bias, low=0.0)

    @staticmethod
    def _scale(depth: int, beta: float) -> float:
        """scikit-ntk's normalization 1 / ((depth + 1)(1 + beta^2)), applied as a product
        everywhere (kernel and diag agree to the bit)."""
        return 1.0 / ((depth + 1) * (1.0 + beta * beta))

    @staticmethod
    def _program(d: int, depth: int, beta: float):
        """The layer program for inputs of dimension d, with NTK-only bias beta."""
        # W_std^2 = d undoes the 1/d of the input kernel x . z / d: scikit-ntk uses x . z.
        layers = [Dense(None, float(d) ** 0.5, None)]
        for _ in range(depth):
            layers += [Relu(), Dense(None, 2.0**0.5, None)]
        return _engine.build_program(layers, d, ntk_bias=beta)

    def __call__(self, X, Y=None, eval_gradient=False):
        """The kernel k(X, Y) and, optionally, its gradient in log(bias).

        Parameters
        ----------
        X : ndarray of shape (n_samples_X, n_features)
        Y : ndarray of shape (n_samples_Y, n_features), default=None
            None: k(X, X) with the symmetry; otherwise the N x M cross kernel only.
        eval_gradient : bool, default=False
            Also return dK/dlog(bias), shape (N, N, 1) ((N, N, 0) when the bias is fixed).
            Only when Y is None.

        Returns
        -------
        K : ndarray of shape (n_samples_X, n_samples_Y)
        K_gradient : ndarray of shape (n_samples_X, n_samples_X, n_dims), optional
        """
        if eval_gradient and Y is not None:
            raise ValueError("Gradient can only be evaluated when Y is None.")
        depth, beta = self._checked()
        a1, a2 = _engine.inputs(X, Y)
        d = a1.shape[1]
        b2 = beta * beta
        scale = self._scale(depth, beta)
        k = _engine.gram(self._program(d, depth, beta), a1, a2, ("ntk",))["ntk"]
        if not eval_gradient or self.hyperparameter_bias.fixed:
            k *= scale
            if eval_gradient:
                return k, np.empty((k.shape[0], k.shape[0], 0))
            return k
        # beta enters the NTK only, through the constant beta^2 each Dense layer adds, and
        # linearly (K_h = K_{h-1} S'_h + S_h + beta^2, with S and S' free of beta): the raw
        # kernel is exactly affine in beta^2, K(beta) = A + beta^2 B. So B = dK/d(beta^2) is
        # (K(beta') - K(beta)) / c with beta'^2 = beta^2 + c, from a second plain pass. Two
        # plain passes cost about half of one pass of the forward-mode derivative path (seeds)
        # when it ran its transcendentals one pair at a time; it is vectorized now (two
        # directions ~3x a plain pass), so which is cheaper for one direction is unmeasured.
        # Round-off: B >= 1 entrywise (its last-layer term is 1; the others are >= 0), and
        # |A| <= max_i A_ii = (depth + 1) max |x_i|^2 (ReLU with weight variance 2 keeps
        # each point's variance, so A_ii adds |x_i|^2 per layer). With c >= that and
        # c >= beta^2, |K(beta)| and |K(beta')| are at most 3 c B, so the difference carries
        # a few ulps of c B: B to a few ulps, as accurate as the derivative recursion.
        c = max(1.0, b2, (depth + 1) * float(np.max(np.einsum("ij,ij->i", a1, a1), initial=0.0)))
        k2 = _engine.gram(self._program(d, depth, (b2 + c) ** 0.5), a1, None, ("ntk",))["ntk"]
        # dK/dlog(beta) = 2 beta^2 d/d(beta^2) of scale(beta) K(beta), with
        # d scale/d(beta^2) = -scale / (1 + beta^2):
        #   grad = (2 beta^2 scale / c) (K(beta') - K(beta)) - (2 beta^2 scale / (1 + beta^2)) K(beta)
        a = 2.0 * b2 * scale / c
        k2 *= a
        grad = scipy.linalg.blas.daxpy(k.ravel(), k2.ravel(), a=-a - 2.0 * b2 * scale / (1.0 + b2))
        k *= scale
        return k, grad.reshape(k.shape)[:, :, None]

    def diag(self, X):
        """k(x, x) for each row of X, shape (n_samples_X,), in O(n_samples_X n_features)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array of shape (N, d), got shape {X.shape}")
        depth, beta = self._checked()
        a = _engine.as_input(X, "X")
        return _engine.diagonal(self._program(a.shape[1], depth, beta), a)[1] * self._scale(depth, beta)

    def is_stationary(self):
        """False: the kernel depends on the inputs' norms and angle."""
        return False

    def __repr__(self):
        # scikit-ntk's format, so that printed models read the same after the swap.
        try:
            return f"{type(self).__name__}(depth={self.depth:d}, bias={self.bias:.3f})"
        except (TypeError, ValueError):
            return f"{type(self).__name__}(depth={self.depth!r}, bias={self.bias!r})"


# ---------------------------------------------------------------------------------------
# Maximum-likelihood GP regression with an MLP's kernel


class MLPGaussianProcessRegressor(RegressorMixin, BaseEstimator):
    """Gaussian-process regression with an MLP's NTK or NNGP, its ``W_std``, ``b_std``, the
    noise and the depth fitted by maximizing the log marginal likelihood.

    The model is ``y ~ N(0, K + noise I)``, each target column independent, with ``K`` the
    kernel of :class:`NTK` or :class:`NNGP` (any activation, either parameterization): the
    same model as scikit-learn's ``GaussianProcessRegressor(NTK(...) + WhiteKernel(...))``,
    fitted faster. Each likelihood evaluation is one native pass (the kernel and its
    derivatives in log W_std and log b_std; every candidate depth captured from the pass of
    the deepest network), one Cholesky factorization per depth, and for the exact gradient one
    inversion of the best depth's factor (LAPACK potri: a third of the flops of the
    ``cho_solve(L, I)`` scikit-learn adds). The search is L-BFGS-B on ``log(W_std, b_std, noise)`` from the given
    values and ``n_restarts`` random starts (uniform in the log-bounds, drawn as scikit-learn
    draws them, so the same ``random_state`` gives the same starts). With several depths, the
    search climbs the largest likelihood over them (all from the one pass), then each depth
    is polished alone from the best point seen for it; the largest likelihood wins.

    Parameters
    ----------
    kernel : {'ntk', 'nngp'}, default='ntk'
        The MLP's neural tangent kernel or its NNGP.
    depth : int or sequence of int, default=2
        Hidden layers (activations) of ``Dense, act, ..., act, Dense``; a sequence: the depth
        is fitted too, by the largest likelihood.
    activation : str or fastntk activation layer, default='relu'
        As the other estimators' (e.g. 'relu', 'erf', 'gelu', or ``fastntk.LeakyRelu(0.3)``).
    W_std, b_std : float, default=sqrt(2), 0.1
        Starting values (the fitted values where the bounds are 'fixed'); > 0 when fitted,
        b_std >= 0 when fixed.
    noise : float, default=1.0
        Starting noise variance (WhiteKernel's ``noise_level``), > 0 when fitted, >= 0 fixed.
    parameterization : {'ntk', 'standard'}, default='ntk'
        Of the Dense layers (Neural Tangents' meaning).
    width : int, default=512
        Hidden width; the standard parameterization's NTK depends on it (ignored otherwise).
    W_std_bounds, b_std_bounds, noise_bounds : pair of floats > 0 or 'fixed', \
default=(1e-2, 1e2), (1e-5, 1e5), (1e-5, 1e5)
        Bounds of the search (those of :class:`NTK` and ``WhiteKernel``); 'fixed' keeps the
        starting value.
    n_restarts : int, default=0
        Random starts after the first, >= 0.
    random_state : int, RandomState instance or None, default=None
        Seeds the random starts.

    Attributes
    ----------
    W_std_, b_std_, noise_ : float
        The fitted hyperparameters.
    depth_ : int
        The fitted depth.
    log_marginal_likelihood_value_ : float
        The log marginal likelihood at the fit (summed over target columns).
    depths_ : ndarray of int
        The candidate depths, ascending.
    log_marginal_likelihood_by_depth_ : ndarray of float
        For each candidate depth, the largest log likelihood found for it (after its own
        polish; the fitted value for ``depth_``).
    theta_ : ndarray
        ``log`` of the fitted free hyperparameters, in the order W_std, b_std, noise.
    n_evaluations_ : int
        Likelihood evaluations (kernel passes) of the fit.
    alpha_ : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        ``(K + noise I)^-1 y``: predictions are ``K(x, X_train_) @ alpha_``.
    L_ : ndarray of shape (n_samples, n_samples)
        The lower Cholesky factor of ``K + noise I``.
    X_train_ : ndarray of shape (n_samples, n_features)
    y_train_ : ndarray of shape (n_samples,) or (n_samples, n_outputs)
    n_features_in_ : int
    """

    def __init__(
        self,
        kernel="ntk",
        depth=_DEPTH,
        activation="relu",
        W_std=_W_STD,
        b_std=_B_STD,
        noise=1.0,
        parameterization="ntk",
        width=_WIDTH,
        W_std_bounds=(1e-2, 1e2),
        b_std_bounds=(1e-5, 1e5),
        noise_bounds=(1e-5, 1e5),
        n_restarts=0,
        random_state=None,
    ):
        self.kernel = kernel
        self.depth = depth
        self.activation = activation
        self.W_std = W_std
        self.b_std = b_std
        self.noise = noise
        self.parameterization = parameterization
        self.width = width
        self.W_std_bounds = W_std_bounds
        self.b_std_bounds = b_std_bounds
        self.noise_bounds = noise_bounds
        self.n_restarts = n_restarts
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _spec(self) -> dict:
        """The checked parameters: architecture, kernel name, free names and log-bounds."""
        owner = type(self).__name__
        if not isinstance(self.kernel, str) or self.kernel.lower() not in ("ntk", "nngp"):
            raise ValueError(f"{owner}: kernel must be 'ntk' or 'nngp', got {self.kernel!r}")
        if self.b_std is None:
            raise TypeError(f"{owner}: b_std must be a real number >= 0 (a hyperparameter), got None")
        arch = check_architecture(owner, depth=self.depth, activation=self.activation, W_std=self.W_std,
                                  b_std=self.b_std, parameterization=self.parameterization, width=self.width)  # fmt: skip
        noise = check_real(owner, "noise", self.noise, low=0.0)
        check_int(owner, "n_restarts", self.n_restarts, low=0)
        free, bounds = [], []
        for name, value in (("W_std", arch["W_std"]), ("b_std", arch["b_std"]), ("noise", noise)):
            b = _check_bounds(owner, name, getattr(self, f"{name}_bounds"), value)
            if b is not None:
                free.append(name)
                bounds.append(np.log(b))
        return dict(
            arch=arch,
            name=self.kernel.lower(),
            noise=noise,
            free=tuple(free),
            bounds=np.array(bounds, dtype=float).reshape(-1, 2),
        )

    def fit(self, X, y):
        """Fit to inputs X (n_samples, n_features) and targets y (n_samples,) or
        (n_samples, n_outputs). Returns self.

        Raises ValueError for non-finite inputs or targets and bad parameters, before any
        kernel is computed, and a ValueError naming the failed Cholesky pivot and the smallest
        eigenvalue when no point of the search gave a positive definite ``K + noise I``.
        """
        from sklearn.utils import check_random_state

        from . import _gp_fit

        spec = self._spec()
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        y2 = y[:, None] if y.ndim == 1 else y
        a = _engine.as_input(X, "X")
        depths = spec["arch"]["depths"]
        out = _gp_fit.fit(spec, a, y2, depths, int(self.n_restarts), check_random_state(self.random_state))
        self._spec_fit = spec
        self.depth_ = int(out["depth"])
        self.W_std_ = out["values"]["W_std"]
        self.b_std_ = out["values"]["b_std"]
        self.noise_ = out["values"]["noise"]
        self.theta_ = out["theta"]
        self.log_marginal_likelihood_value_ = float(out["lml"])
        self.depths_ = np.array(depths)
        self.log_marginal_likelihood_by_depth_ = np.array([out["lml_by_depth"][d] for d in depths])
        self.n_evaluations_ = int(out["n_evaluations"])
        self.L_ = out["factor"][0]
        alpha = scipy.linalg.cho_solve(out["factor"], y2, check_finite=False)
        self.alpha_ = alpha[:, 0] if y.ndim == 1 else alpha
        self.X_train_ = a
        self.y_train_ = y
        return self

    def _fitted_network(self):
        arch = dict(self._spec_fit["arch"], W_std=self.W_std_, b_std=self.b_std_)
        return mlp(arch, self.depth_)

    def predict(self, X, return_std=False):
        """The posterior mean at X (n_samples, n_features), and with ``return_std`` the
        standard deviation of a new noisy observation there (the kernel's posterior variance
        plus ``noise_``, as scikit-learn's GP with a WhiteKernel reports it)."""
        check_is_fitted(self, "alpha_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        net = self._fitted_network()
        name = self._spec_fit["name"]
        alpha2 = self.alpha_[:, None] if self.alpha_.ndim == 1 else self.alpha_
        if not return_std:
            mean = _predict_kernel(net, X, self.X_train_, name, alpha2)
            return mean[:, 0] if self.alpha_.ndim == 1 else mean
        a, _ = _engine.inputs(X, None)
        program = _engine.program(net, a.shape[1])
        k_cross = _engine.gram(program, a, self.X_train_, (name,), layers=net.layers)[name]  # (M, N)
        mean = k_cross @ alpha2
        v = scipy.linalg.solve_triangular(self.L_, k_cross.T, lower=True, check_finite=False)
        nngp, ntk = _engine.diagonal(program, a, net.layers)
        prior = ntk if name == "ntk" else nngp
        var = np.maximum(prior - np.einsum("ij,ij->j", v, v), 0.0) + self.noise_
        std = np.sqrt(var)
        if self.alpha_.ndim == 1:
            return mean[:, 0], std
        return mean, np.repeat(std[:, None], alpha2.shape[1], axis=1)

    def log_marginal_likelihood(self, theta=None, eval_gradient=False):
        """The log marginal likelihood of the training data at the fitted depth, at ``theta``
        (log of the free hyperparameters, order W_std, b_std, noise; None: the fit's value),
        and with ``eval_gradient`` its gradient in theta. -inf (gradient zeros) where
        ``K + noise I`` is not positive definite, as scikit-learn's."""
        from . import _gp_fit

        check_is_fitted(self, "alpha_")
        if theta is None:
            if eval_gradient:
                theta = self.theta_
            else:
                return self.log_marginal_likelihood_value_
        theta = np.asarray(theta, dtype=np.float64).reshape(-1)
        if theta.shape != (len(self._spec_fit["free"]),) or not np.all(np.isfinite(theta)):
            raise ValueError(
                f"{type(self).__name__}: theta must hold {len(self._spec_fit['free'])} finite values "
                f"(log of {', '.join(self._spec_fit['free'])}), got {theta!r}"
            )
        y2 = self.y_train_[:, None] if self.y_train_.ndim == 1 else self.y_train_
        problem = _gp_fit.Problem(self._spec_fit, self.X_train_, y2)
        _, lml, grad, _ = problem.evaluate(theta, [self.depth_])
        if not eval_gradient:
            return lml
        return lml, (np.zeros(theta.shape) if grad is None else grad)


def _check_bounds(owner: str, name: str, bounds, value: float):
    """The (low, high) search bounds of hyperparameter ``name`` (None: 'fixed'), after
    checking them and that they contain the starting value."""
    if isinstance(bounds, str):
        if bounds != "fixed":
            raise ValueError(f"{owner}: {name}_bounds must be a pair (low, high) or 'fixed', got {bounds!r}")
        return None
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(
            f"{owner}: {name}_bounds must be a pair (low, high) or 'fixed', got {bounds!r}"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and 0.0 < low <= high):
        raise ValueError(
            f"{owner}: {name}_bounds must be finite with 0 < low <= high (the search is on log {name}), "
            f"so {bounds!r} admits no value"
        )
    if not low <= value <= high:
        raise ValueError(f"{owner}: the starting {name}={value!r} is outside {name}_bounds={bounds!r}")
    return (low, high)
