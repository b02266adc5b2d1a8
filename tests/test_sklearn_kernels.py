"""fastntk.sklearn GP kernels: NTK and NNGP (values against the plain-NumPy reference, analytic
gradients against finite differences, the Kernel API, GaussianProcessRegressor), and the
scikit-ntk drop-in NeuralTangentKernel (against scikit-ntk itself and a NumPy reference)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, WhiteKernel

from fastntk.sklearn import NNGP, NTK, NeuralTangentKernel

from conftest import TOL, assert_kernel_close, entry_scale
from reference import ntk_gram_ref
from sklearn_ref import skntk_ref
from specs import ACTIVATION_SPECS, mlp

# Finite differences in log(theta): central differences at steps h and h/2 combined by
# Richardson extrapolation, error h^4/480 max|d^5 K / dlog theta^5| + O(eps |K| / h). The
# steepest kernel here grows like W^(2 (L + 1)) = exp(2 (L + 1) log W), so d^5/dlog W^5
# multiplies it by at most (2 (L + 1))^5 = 8^5 for L = 3: at h = 1e-3 that is ~7e-11 of |K|,
# and round-off ~eps / h ~ 2e-13; 1e-8 is far above both and far below any wrong derivative.
FD_STEP, FD_TOL = 1e-3, 1e-8


def _fd_log(kernel_at, theta0, h=FD_STEP):
    def central(step):
        return (kernel_at(theta0 * np.exp(step)) - kernel_at(theta0 * np.exp(-step))) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


def _points(rng, n=14, d=4):
    x = rng.standard_normal((n, d))
    x[3] = -2.5 * x[1]  # an antipodal pair
    x[5] = x[2]  # a duplicated pair
    return x


# ---------------------------------------------------------------------------------------
# NTK and NNGP


KINDS = [(NTK, 1), (NNGP, 0)]  # (class, index of its kernel in ntk_gram_ref's (nngp, ntk))


@pytest.mark.parametrize("cls, index", KINDS, ids=["NTK", "NNGP"])
@pytest.mark.parametrize("act", ["relu", "erf", "gelu", "leaky_relu"])
def test_values_match_the_reference(cls, index, act, rng):
    x, y = rng.standard_normal((11, 5)), rng.standard_normal((7, 5))
    activation = ACTIVATION_SPECS[act][1]() if act == "leaky_relu" else act
    kernel = cls(depth=3, activation=activation, W_std=1.3, b_std=0.2)
    spec = mlp(act, 3, 1.3, 0.2)
    ref_xx, ref_xy = ntk_gram_ref(spec, x)[index], ntk_gram_ref(spec, x, y)[index]
    ref_yy = ntk_gram_ref(spec, y)[index]
    assert_kernel_close(
        kernel(x), ref_xx, TOL["reference"], entry_scale(ref_xx, np.diag(ref_xx), np.diag(ref_xx))
    )
    k_xy = kernel(x, y)
    assert k_xy.shape == (11, 7)
    assert_kernel_close(k_xy, ref_xy, TOL["reference"], entry_scale(ref_xy, np.diag(ref_xx), np.diag(ref_yy)))
    # diag is the diagonal of the Gram matrix (the same exact diagonal maps), in O(N d).
    np.testing.assert_array_equal(kernel.diag(x), np.diag(kernel(x)))


@pytest.mark.parametrize("cls", [NTK, NNGP])
@pytest.mark.parametrize("act", ["relu", "erf"])
def test_gradients_match_finite_differences(cls, act, rng):
    x = _points(rng)
    W, b = 1.3, 0.3
    kernel = cls(depth=3, activation=act, W_std=W, b_std=b)
    k, grad = kernel(x, eval_gradient=True)
    assert grad.shape == (14, 14, 2) and np.all(np.isfinite(grad))
    assert [h.name for h in kernel.hyperparameters] == ["W_std", "b_std"]  # the gradient's order
    np.testing.assert_allclose(k, kernel(x), rtol=0, atol=1e-13 * np.max(np.abs(k)))
    for p, (name, value) in enumerate((("W_std", W), ("b_std", b))):
        fd = _fd_log(lambda v, p=p: kernel.clone_with_theta(np.log([v, b] if p == 0 else [W, v]))(x), value)
        scale = np.max(np.abs(fd)) + np.max(np.abs(k))
        np.testing.assert_allclose(grad[..., p], fd, rtol=0, atol=FD_TOL * scale, err_msg=name)


@pytest.mark.parametrize("cls", [NTK, NNGP])
def test_gradient_for_antipodal_inputs_without_bias(cls, rng):
    """With b_std = 0 (fixed) an antipodal pair stays at correlation -1 through every ReLU
    layer, where the derivative of the angle is infinite: the gradient in W_std must be the
    finite limit (the pair's correlation does not move), and match finite differences."""
    x = rng.standard_normal((5, 3))
    x[1] = -2.5 * x[0]
    kernel = cls(depth=3, W_std=1.2, b_std=0.0, b_std_bounds="fixed")
    k, grad = kernel(x, eval_gradient=True)
    assert grad.shape == (5, 5, 1) and np.all(np.isfinite(grad))
    fd = _fd_log(lambda v: kernel.clone_with_theta(np.log([v]))(x), 1.2)
    np.testing.assert_allclose(grad[..., 0], fd, rtol=0, atol=FD_TOL * np.max(np.abs(k)))


def test_fixed_hyperparameters_drop_their_gradient_columns(rng):
    x = _points(rng, n=8)
    full = NTK(depth=2, W_std=1.1, b_std=0.4)(x, eval_gradient=True)[1]
    only_w = NTK(depth=2, W_std=1.1, b_std=0.4, b_std_bounds="fixed")(x, eval_gradient=True)[1]
    only_b = NTK(depth=2, W_std=1.1, b_std=0.4, W_std_bounds="fixed")(x, eval_gradient=True)[1]
    both = NTK(depth=2, W_std=1.1, b_std=0.4, W_std_bounds="fixed", b_std_bounds="fixed")
    k, none = both(x, eval_gradient=True)
    # Each direction is its own dual component: P = 1 and P = 2 give the same numbers.
    np.testing.assert_allclose(only_w[..., 0], full[..., 0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(only_b[..., 0], full[..., 1], rtol=1e-14, atol=0)
    assert none.shape == (8, 8, 0) and k.shape == (8, 8)


def test_kernel_api(rng):
    kernel = NTK(depth=3, activation="erf", W_std=1.5, b_std=0.2, W_std_bounds=(0.5, 5.0))
    np.testing.assert_allclose(kernel.theta, np.log([1.5, 0.2]))
    np.testing.assert_allclose(kernel.bounds, np.log([[0.5, 5.0], [1e-5, 1e5]]))
    assert kernel.n_dims == 2 and not kernel.is_stationary() and kernel.requires_vector_input
    other = kernel.clone_with_theta(np.log([2.0, 0.3]))
    assert other.W_std == pytest.approx(2.0) and other.b_std == pytest.approx(0.3) and other.depth == 3
    assert clone(kernel) == kernel and other != kernel
    assert pickle.loads(pickle.dumps(kernel)) == kernel
    assert repr(kernel) == "NTK(depth=3, activation='erf', W_std=1.5, b_std=0.2)"
    assert kernel.get_params() == dict(
        depth=3, activation="erf", W_std=1.5, b_std=0.2, W_std_bounds=(0.5, 5.0), b_std_bounds=(1e-5, 1e5)
    )
    # Inside sums and products, through scikit-learn's own kernel algebra.
    x = rng.standard_normal((6, 3))
    combined = ConstantKernel(2.0) * kernel + WhiteKernel(0.1)
    k, grad = combined(x, eval_gradient=True)
    np.testing.assert_allclose(k, 2.0 * kernel(x) + 0.1 * np.eye(6), rtol=1e-14)
    assert grad.shape == (6, 6, 4)


BAD_KERNELS = [
    (NTK(depth=-1), ValueError, r"NTK: depth must be an integer >= 0, got -1"),
    (NTK(depth=[1, 2]), TypeError, r"NTK: depth must be an integer >= 0 \(hidden layers\)"),
    (NNGP(W_std=0.0), ValueError, r"NNGP: W_std must be > 0.0"),
    (NNGP(b_std=-1.0), ValueError, r"NNGP: b_std must be >= 0.0"),
    (NTK(b_std=None), TypeError, r"NTK: b_std must be a real number >= 0 \(a hyperparameter\), got None"),
    (NTK(activation="tanh"), ValueError, r"NTK: activation must be one of"),
    (
        NeuralTangentKernel(depth=-2),
        ValueError,
        r"NeuralTangentKernel: depth must be an integer >= 0, got -2",
    ),
    (NeuralTangentKernel(depth=2.0), TypeError, r"NeuralTangentKernel: depth must be an integer, got 2.0"),
    (NeuralTangentKernel(3, bias=-0.1), ValueError, r"NeuralTangentKernel: bias must be >= 0.0, got -0.1"),
]


@pytest.mark.parametrize(
    "kernel, exc, match", BAD_KERNELS, ids=lambda v: repr(v) if isinstance(v, str) else None
)
def test_bad_kernel_parameters(kernel, exc, match, rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(exc, match=match):
        kernel(x)
    with pytest.raises(exc, match=match):
        kernel.diag(x)


@pytest.mark.parametrize("kernel", [NTK(), NeuralTangentKernel(2)], ids=["NTK", "NeuralTangentKernel"])
def test_bad_kernel_calls(kernel, rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="Gradient can only be evaluated when Y is None"):
        kernel(x, x[:2], eval_gradient=True)
    with pytest.raises(ValueError, match=r"x1 and x2 must have the same number of features"):
        kernel(x, rng.standard_normal((2, 4)))
    with pytest.raises(ValueError, match=r"X must be a 2-D array"):
        kernel.diag(x[0])
    with pytest.raises(ValueError, match=r"non-finite value"):
        kernel(np.array([[0.0, np.nan, 1.0]]))


@pytest.mark.parametrize("cls, index", KINDS, ids=["NTK", "NNGP"])
def test_inside_gaussian_process_regressor(cls, index, rng):
    """The GP's log marginal likelihood gradient (scikit-learn's own formula fed our kernel
    gradients) matches finite differences of the likelihood; the optimizer improves the
    likelihood; and the fitted GP predicts the posterior mean of the reference kernel."""
    x, xt = rng.standard_normal((40, 3)), rng.standard_normal((9, 3))
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] + 0.3 * rng.standard_normal(40)
    # The noise is fixed at its true variance: on 40 points the likelihood may prefer none at
    # all (the NTK explains them), which would end at the noise's lower bound with a warning.
    kernel = cls(depth=2, W_std=1.2, b_std=0.3) + WhiteKernel(0.09, noise_level_bounds="fixed")
    gp = GaussianProcessRegressor(kernel, optimizer=None).fit(x, y)
    theta0 = gp.kernel_.theta
    lml, grad = gp.log_marginal_likelihood(theta0, eval_gradient=True)
    for p in range(len(theta0)):
        step = np.zeros_like(theta0)
        step[p] = FD_STEP

        def at(s, step=step):
            return gp.log_marginal_likelihood(theta0 + s * step / FD_STEP)

        fd = (
            4 * (at(FD_STEP / 2) - at(-FD_STEP / 2)) / FD_STEP - (at(FD_STEP) - at(-FD_STEP)) / (2 * FD_STEP)
        ) / 3
        # The likelihood is a smooth function of theta; besides the FD error (as above) the
        # Cholesky-based likelihood carries ~cond(K) eps of round-off, ~1e-9 here.
        assert abs(grad[p] - fd) <= 1e-6 * (abs(fd) + abs(lml) * FD_STEP), (p, grad[p], fd)
    fitted = GaussianProcessRegressor(kernel, random_state=0).fit(x, y)
    assert fitted.log_marginal_likelihood_value_ > lml
    params = fitted.kernel_.get_params()
    spec = mlp("relu", 2, params["k1__W_std"], params["k1__b_std"])
    k_train = ntk_gram_ref(spec, x)[index] + params["k2__noise_level"] * np.eye(40)
    k_test = ntk_gram_ref(spec, xt, x)[index]
    mean = k_test @ np.linalg.solve(k_train + 1e-10 * np.eye(40), y)  # 1e-10: the GP's own alpha
    np.testing.assert_allclose(fitted.predict(xt), mean, rtol=0, atol=1e-9 * np.max(np.abs(mean)))


# ---------------------------------------------------------------------------------------
# NeuralTangentKernel: scikit-ntk's convention and numbers

# The comparisons below allow for the one place where digits are lost whatever the
# implementation: the angle of a nearly parallel pair. With the correlation known to a few
# ulps (delta ~ 8 eps, 4 rounded operations), acos near 1 is known to sqrt(2 delta) ~ 6e-8,
# so each ReLU derivative (pi - theta)/pi to 2e-8, and two implementations may differ by
# twice that per layer. (scikit-ntk's own arccos(clip(s / sqrt(q q'))) is such a case.)
PARALLEL_RTOL_PER_LAYER = 4e-8


def _skntk_points(rng, n=30, d=5):
    x = rng.standard_normal((n, d))
    x[4] = x[1]  # duplicated
    x[6] = x[2] + 1e-7 * rng.standard_normal(d)  # nearly parallel
    x[8] = 0.3 * x[7]  # parallel, different norms
    return x


def _close(actual, expected, rtol, scale):
    """|actual - expected| <= rtol * max(|expected|, scale), entrywise (scale broadcasts)."""
    assert_kernel_close(actual, expected, rtol, np.broadcast_to(scale, np.shape(expected)))


@pytest.mark.parametrize("depth", [0, 1, 3, 6])
@pytest.mark.parametrize("bias", [0.0, 0.1, 1.7])
def test_neural_tangent_kernel_matches_numpy_reference(depth, bias, rng):
    """On points without near-parallel pairs, the reference agrees to round-off."""
    x, z = rng.standard_normal((12, 5)), rng.standard_normal((7, 5))
    kernel = NeuralTangentKernel(depth, bias=bias)
    k, grad = kernel(x, eval_gradient=True)
    ref_k, ref_g = skntk_ref(x, None, depth, bias)
    scale = entry_scale(ref_k, np.diag(ref_k), np.diag(ref_k))
    _close(k, ref_k, TOL["reference"], scale)
    _close(grad[..., 0], ref_g, TOL["reference"], scale)
    _close(kernel(x, z), skntk_ref(x, z, depth, bias)[0], TOL["reference"], np.max(np.abs(ref_k)))
    np.testing.assert_array_equal(kernel.diag(x), np.diag(k))


@pytest.mark.parametrize("depth", [1, 3])
def test_neural_tangent_kernel_gradient_finite_differences_and_antipodal(depth, rng):
    """Antipodal inputs: scikit-ntk's NNGP has no bias, so the pair's correlation is -1 and
    the first ReLU derivative is 0; the derivative in log(bias) is finite (scikit-ntk
    returns NaN there) and matches finite differences."""
    x = _points(rng)
    bias = 0.4
    kernel = NeuralTangentKernel(depth, bias=bias)
    k, grad = kernel(x, eval_gradient=True)
    assert grad.shape == (14, 14, 1) and np.all(np.isfinite(grad))
    fd = _fd_log(lambda b: NeuralTangentKernel(depth, bias=b)(x), bias)
    np.testing.assert_allclose(
        grad[..., 0], fd, rtol=0, atol=FD_TOL * (np.max(np.abs(fd)) + np.max(np.abs(k)))
    )
    _, ref_g = skntk_ref(x, None, depth, bias)
    np.testing.assert_allclose(
        grad[..., 0], ref_g, rtol=0, atol=PARALLEL_RTOL_PER_LAYER * depth * np.max(np.abs(k))
    )


def test_neural_tangent_kernel_zero_and_tiny_inputs(rng):
    """Where scikit-ntk clips the norm product at 1e-10 we return the exact kernel: a zero
    input has zero NNGP covariance and angle pi/2 with every point; inputs of norm 1e-6
    have the same correlations as their rescaled copies."""
    x = rng.standard_normal((6, 3))
    x[2] = 0.0
    kernel = NeuralTangentKernel(3, bias=0.5)
    ref_k, ref_g = skntk_ref(x, None, 3, 0.5)
    k, grad = kernel(x, eval_gradient=True)
    _close(k, ref_k, TOL["reference"], np.max(np.abs(ref_k)))
    _close(grad[..., 0], ref_g, TOL["reference"], np.max(np.abs(ref_k)))
    tiny = 1e-6 * rng.standard_normal((6, 3))
    _close(kernel(tiny), skntk_ref(tiny, None, 3, 0.5)[0], TOL["reference"], np.max(np.abs(kernel(tiny))))


def _skntk():
    """scikit-ntk (a test dependency), or skip."""
    return pytest.importorskip("skntk", reason="scikit-ntk is not installed (pip install scikit-ntk)")


@pytest.mark.parametrize("depth", [0, 1, 3, 6])
@pytest.mark.parametrize("bias", [0.0, 0.1, 1.7])
def test_neural_tangent_kernel_matches_scikit_ntk(depth, bias, rng):
    skntk = _skntk()
    x, z = _skntk_points(rng), rng.standard_normal((9, 5))
    z[0] = x[3]  # a point in both sets
    ours, theirs = NeuralTangentKernel(depth, bias=bias), skntk.NeuralTangentKernel(depth, bias=bias)
    rtol = PARALLEL_RTOL_PER_LAYER * max(depth, 1)
    k, grad = ours(x, eval_gradient=True)
    k_ref, grad_ref = theirs(x, eval_gradient=True)
    scale = entry_scale(k_ref, np.diag(k_ref), np.diag(k_ref))
    _close(k, k_ref, rtol, scale)
    assert grad.shape == grad_ref.shape
    _close(grad, grad_ref, rtol, scale[..., None])
    k_xz = ours(x, z)
    k_xz_ref = theirs(x, z)
    assert k_xz.shape == k_xz_ref.shape == (30, 9)
    _close(k_xz, k_xz_ref, rtol, np.max(np.abs(k_xz_ref)))
    _close(ours.diag(x), theirs.diag(x), rtol, np.abs(theirs.diag(x)))
    assert repr(ours) == repr(theirs)
    assert ours.get_params() == theirs.get_params()
    assert [h.name for h in ours.hyperparameters] == [h.name for h in theirs.hyperparameters]
    np.testing.assert_array_equal(ours.bounds, theirs.bounds)
    # bias fixed: no gradient columns, like scikit-ntk
    fixed_grad = NeuralTangentKernel(depth, bias, bias_bounds="fixed")(x, eval_gradient=True)[1]
    assert fixed_grad.shape == skntk.NeuralTangentKernel(depth, bias, "fixed")(x, eval_gradient=True)[1].shape


def test_neural_tangent_kernel_gaussian_process_fit_matches_scikit_ntk(rng):
    """The same GaussianProcessRegressor fit with either kernel: the optimizer follows the
    same path to the same bias, and predicts the same."""
    skntk = _skntk()
    x, xt = rng.standard_normal((60, 4)), rng.standard_normal((15, 4))
    y = np.sin(1.5 * x[:, 0]) * x[:, 1] + 0.1 * rng.standard_normal(60)
    fits = []
    for kernel in (NeuralTangentKernel(3, bias=0.5), skntk.NeuralTangentKernel(3, bias=0.5)):
        gp = GaussianProcessRegressor(kernel, alpha=1e-2, normalize_y=True, random_state=0)
        gp.fit(x, y)
        fits.append((gp.kernel_.bias, gp.predict(xt), gp.log_marginal_likelihood_value_))
    (b_ours, p_ours, l_ours), (b_theirs, p_theirs, l_theirs) = fits
    assert b_theirs != 0.5  # the optimizer moved
    # On these points (no nearly parallel pairs) the kernels and gradients agree to round-off
    # (~1e-15), so L-BFGS-B takes the same steps and its end points agree to about that,
    # amplified by the likelihood's conditioning; 1e-8 leaves room for it and for other BLAS.
    assert b_ours == pytest.approx(b_theirs, rel=1e-8)
    assert l_ours == pytest.approx(l_theirs, rel=1e-10)
    np.testing.assert_allclose(p_ours, p_theirs, rtol=0, atol=1e-8 * np.max(np.abs(p_theirs)))
