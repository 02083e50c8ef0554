"""Shared test configuration: x64 on, rank promotion raises, one tolerance table."""

import os

# The suite compiles thousands of small programs, and XLA:CPU spends most of
# that time in LLVM's optimisation passes: at optimisation level 0 the whole
# suite runs in about half the time (2 cores: 18 instead of 33-38 minutes).
# The programs are the same (the optimised HLO and its temporaries of every
# bench case, forward and gradient, are identical at both levels); the machine
# code may round differently where LLVM fuses a multiply and an add, within
# every tolerance below.  A level given in XLA_FLAGS wins:
# XLA_FLAGS=--xla_backend_optimization_level=3 (XLA's default) tests the code
# users run.  Set before jax creates its CPU client, which reads XLA_FLAGS
# once; subprocesses the tests start inherit it.
_FLAGS = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _FLAGS:
    os.environ["XLA_FLAGS"] = f"{_FLAGS} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# Absolute/relative tolerance per dtype, used by every comparison in the suite.
TOLERANCE = {
    np.dtype("float64"): 1e-10,
    np.dtype("complex128"): 1e-10,
    np.dtype("float32"): 2e-5,
    np.dtype("complex64"): 2e-5,
    np.dtype("float16"): 2e-2,
    np.dtype(jax.numpy.bfloat16): 5e-2,
}


def tol(dtype) -> float:
    """Tolerance for comparing results of dtype ``dtype`` (0 for integers)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        return 0.0
    return TOLERANCE[dtype]


def assert_close(actual, expected, dtype=None, scale=None):
    """Assert ``actual`` equals ``expected`` within the dtype's tolerance.

    The tolerance is relative to ``scale`` (default: max |expected|, at least 1),
    so sums of many products are compared fairly.
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    dtype = actual.dtype if dtype is None else dtype
    t = tol(dtype)
    if t == 0.0:
        np.testing.assert_array_equal(actual, expected)
        return
    if scale is None:
        # Only finite values set the scale: an inf (e.g. a max pool over
        # padding) must not make the tolerance infinite.  assert_allclose
        # still requires infs and NaNs to sit at the same positions.
        magnitude = np.abs(expected.astype(np.complex128))
        finite = magnitude[np.isfinite(magnitude)]
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(
        actual.astype(np.complex128),
        expected.astype(np.complex128),
        rtol=t,
        atol=t * scale,
    )


def assert_non_finite_local(ours, theirs, x, w):
    """A NaN or Inf in the input or the kernel (at its first element and at
    its middle one) makes ``ours(x, w)`` non-finite exactly where
    ``theirs(x, w)`` is (the reference's windows), and nowhere else.

    ``ours`` is traced on its first call here: call this inside the
    ``use_profile`` block whose plan it checks."""
    for where, bad in [("input", np.nan), ("input", np.inf), ("kernel", -np.inf),
                       ("kernel", np.nan)]:
        target = x if where == "input" else w
        for pos in [(0,) * target.ndim, tuple(n // 2 for n in target.shape)]:
            xb, wb = x.copy(), w.copy()
            (xb if where == "input" else wb)[pos] = bad
            got = np.isfinite(np.asarray(ours(xb, wb)))
            want = np.isfinite(np.asarray(theirs(xb, wb)))
            assert not want.all()
            np.testing.assert_array_equal(got, want, err_msg=f"{bad} at {pos}")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_sessionstart(session):
    """With ``JAXCONV_REQUIRE_TORCH=1`` (CI) the PyTorch oracle tests must run:
    fail at once if torch cannot be imported, instead of skipping them."""
    import os

    if os.environ.get("JAXCONV_REQUIRE_TORCH") == "1":
        try:
            import torch  # noqa: F401
        except ImportError as e:
            raise pytest.UsageError(
                "JAXCONV_REQUIRE_TORCH=1 but torch cannot be imported "
                f"({e}): the PyTorch oracle tests would be skipped.") from e


def second_order(f, tx, tw):
    """``jit(g)`` with ``g(x, w)`` the second derivatives of ``sum(f(x, w)**3)``:
    forward mode through the input gradient along ``tx``, and reverse mode
    through the kernel gradient against ``tw``."""

    def g(x, w):
        gx = jax.grad(lambda x, w: jnp.sum(f(x, w) ** 3), (0, 1))
        fwd = jax.jvp(lambda x: gx(x, w)[0], (x,), (tx,))[1]
        rev = jax.grad(lambda w: jnp.vdot(gx(x, w)[1], tw))(w)
        return fwd, rev

    return jax.jit(g)
