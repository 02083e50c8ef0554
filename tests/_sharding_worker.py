"""Sharding checks on a simulated 4-device CPU mesh (run by tests/test_sharding.py).

Run as ``python tests/_sharding_worker.py``: it sets
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` *before* importing jax
(the flag is read once, when the backend starts), runs every check and prints
one JSON object ``{check name: {"ok": bool, "detail": str}}`` on the last line
of stdout.  Checks never raise: a failure is recorded with its message.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

if __name__ == "__main__":  # not when merely imported (pytest --doctest-modules)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import jaxconv  # noqa: E402
from jaxconv import lax as jl  # noqa: E402

NHWC = ("NHWC", "HWIO", "NHWC")
CHECKS: dict[str, object] = {}


def check(name):
    """Register a check (run by ``main``, never at import)."""
    def wrap(fn):
        CHECKS[name] = fn
        return fn
    return wrap


def run_checks() -> dict[str, dict]:
    results = {}
    for name, fn in CHECKS.items():
        try:
            detail = fn()
            results[name] = {"ok": True, "detail": detail or ""}
        except Exception as e:  # noqa: BLE001 - every failure is reported
            results[name] = {"ok": False, "detail": f"{type(e).__name__}: {e}\n"
                             + traceback.format_exc(limit=3)[-1500:]}
    return results


_MESH = []


def mesh():
    if not _MESH:
        _MESH.append(Mesh(np.array(jax.devices()[:4]), ("d",)))
    return _MESH[0]


rng = np.random.default_rng(0)
X = rng.standard_normal((8, 16, 16, 4)).astype(np.float32)
W = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
WD = rng.standard_normal((3, 3, 1, 4)).astype(np.float32)  # depthwise
HI = lax.Precision.HIGHEST


def _conv(algorithm, w=W, groups=1):
    def f(x, w):
        return jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                       feature_group_count=groups, precision=HI,
                                       algorithm=algorithm)
    return f


def _put(a, *spec):
    return jax.device_put(a, NamedSharding(mesh(), P(*spec)))


def _close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.allclose(a, b, rtol=1e-5, atol=1e-5):
        raise AssertionError(f"{what}: max abs diff {np.max(np.abs(a - b))}")


def _no_all_gather(jitted, *args):
    hlo = jitted.lower(*args).compile().as_text()
    count = hlo.count("all-gather")
    if count:
        lines = [ln.strip() for ln in hlo.splitlines() if "all-gather" in ln][:2]
        raise AssertionError(f"{count} all-gather(s) in the compiled HLO: {lines}")
    return f"collectives: all-reduce={hlo.count('all-reduce')}, " \
           f"collective-permute={hlo.count('collective-permute')}"


@check("control_all_gather_detected")
def _():
    """The HLO inspection does see an all-gather when one is needed."""
    f = jax.jit(lambda x: x * 2, out_shardings=NamedSharding(mesh(), P()))
    try:
        _no_all_gather(f, _put(X, "d"))
    except AssertionError:
        return "detected"
    raise AssertionError("gathering a batch-sharded array showed no all-gather")


def _batch_sharded(algorithm, w, groups):
    f = _conv(algorithm, w, groups)
    expected = f(X, w)  # unsharded
    xs, ws = _put(X, "d"), _put(w)
    jitted = jax.jit(f)
    out = jitted(xs, ws)
    _close(out, expected, "batch-sharded result")
    if not out.sharding.is_equivalent_to(NamedSharding(mesh(), P("d")), out.ndim):
        raise AssertionError(f"output sharding {out.sharding} is not batch-sharded")
    return _no_all_gather(jitted, xs, ws)


for _algo in ["auto", "taps", "patches", "direct"]:
    check(f"batch_dense_{_algo}")(lambda a=_algo: _batch_sharded(a, W, 1))
    check(f"batch_depthwise_{_algo}")(lambda a=_algo: _batch_sharded(a, WD, 4))


@check("batch_gradient_auto")
def _():
    def loss(x, w):
        return jnp.sum(_conv("auto")(x, w) ** 2)

    g = jax.jit(jax.grad(loss, (0, 1)))
    ex, ew = g(X, W)
    xs, ws = _put(X, "d"), _put(W)
    ax, aw = g(xs, ws)
    _close(ax, ex, "input gradient")
    _close(aw, ew, "kernel gradient")
    return _no_all_gather(g, xs, ws)


def _spatial_sharded(algorithm, w, groups):
    f = _conv(algorithm, w, groups)
    expected = f(X, w)
    out = jax.jit(f)(_put(X, None, "d"), _put(w))
    _close(out, expected, "H-sharded result")
    return f"output sharding {out.sharding.spec}"


for _algo in ["auto", "taps", "patches"]:
    check(f"spatial_dense_{_algo}")(lambda a=_algo: _spatial_sharded(a, W, 1))
    check(f"spatial_depthwise_{_algo}")(lambda a=_algo: _spatial_sharded(a, WD, 4))


@check("spatial_long1d_auto")
def _():
    x = rng.standard_normal((1, 512, 4)).astype(np.float32)
    w = rng.standard_normal((65, 1, 4)).astype(np.float32)

    def f(x, w):
        return jl.conv_general_dilated(x, w, (1,), "SAME", feature_group_count=4,
                                       dimension_numbers=("NWC", "WIO", "NWC"))

    _close(jax.jit(f)(_put(x, None, "d"), _put(w)), f(x, w), "W-sharded 1-D result")


@check("out_sharding")
def _():
    details = []
    for spec in [P("d"), P(None, "d"), P(None, None, None, "d"), P()]:
        want = NamedSharding(mesh(), spec)

        def f(x, w, want=want):
            return jl.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=NHWC,
                                           out_sharding=want)

        for xs in (X, _put(X, "d")):
            out = jax.jit(f)(xs, W)
            if not out.sharding.is_equivalent_to(want, out.ndim):
                raise AssertionError(f"requested {want}, got {out.sharding}")
            if out.sharding.spec != spec and out.sharding != want:
                details.append(f"{spec}: equivalent, spec {out.sharding.spec}")
            _close(out, f(X, W), f"out_sharding={spec}")
        out = f(_put(X, "d"), W)  # eager too
        if not out.sharding.is_equivalent_to(want, out.ndim):
            raise AssertionError(f"eager: requested {want}, got {out.sharding}")
    return "; ".join(details)


@check("conv_transpose_batch_sharded")
def _():
    w = rng.standard_normal((4, 4, 4, 3)).astype(np.float32)

    def f(x, w):
        return jl.conv_transpose(x, w, (2, 2), "SAME", dimension_numbers=NHWC)

    jitted = jax.jit(f)
    xs = _put(X, "d")
    _close(jitted(xs, _put(w)), f(X, w), "conv_transpose")
    return _no_all_gather(jitted, xs, _put(w))


@check("friendly_ops_batch_sharded")
def _():
    done = []
    xs = _put(X, "d")
    if hasattr(jaxconv, "conv"):
        f = jax.jit(lambda x, w: jaxconv.conv(x, w, padding="SAME"))
        _close(f(xs, W), f(X, W), "jaxconv.conv")
        _no_all_gather(f, xs, W)
        done.append("conv")
    for name in ("max_pool", "avg_pool"):
        if hasattr(jaxconv, name):
            op = getattr(jaxconv, name)
            f = jax.jit(lambda x, op=op: op(x, (3, 3), stride=2, padding="SAME"))
            _close(f(xs), f(X), name)
            _no_all_gather(f, xs)
            done.append(name)
    return "checked: " + ", ".join(done)


# --- Explicit mesh axes (sharding in types) ----------------------------------

def _explicit_mesh():
    from jax.sharding import AxisType

    return jax.make_mesh((4,), ("d",), axis_types=(AxisType.Explicit,))


def _explicit(f, args, *, grad=True):
    """``f`` jitted under an Explicit mesh with batch-sharded ``args[0]``:
    equal to the unsharded call, batch-sharded output, gradients too."""
    expected = f(*args)
    emesh = _explicit_mesh()
    with jax.set_mesh(emesh):
        x = jax.device_put(args[0], NamedSharding(emesh, P("d")))
        out = jax.jit(f)(x, *args[1:])
        _close(out, expected, "explicit batch-sharded result")
        spec = out.sharding.spec
        if not spec or spec[0] != "d":
            raise AssertionError(f"output sharding {out.sharding} is not batch-sharded")
        if grad:
            def loss(*a):
                return jnp.sum(jnp.sin(f(*a)))
            got = jax.jit(jax.grad(loss, tuple(range(len(args)))))(x, *args[1:])
    if grad:
        want = jax.grad(loss, tuple(range(len(args))))(*args)
        for g, e in zip(got, want):  # sums of many terms: relative to the scale
            g, e = np.asarray(g), np.asarray(e)
            if not np.allclose(g, e, rtol=1e-5, atol=1e-5 * max(1, np.abs(e).max())):
                raise AssertionError(f"explicit gradient: max abs diff "
                                     f"{np.max(np.abs(g - e))}")
    return f"output spec {spec}"


def _chunked_rows(f):
    small = jaxconv.get_profile("cpu").replace(rowscan_carry_bytes=1)

    def chunked(*args):
        with jaxconv.use_profile(small):
            return f(*args)
    return chunked


EXPLICIT_CASES = {
    "dense": (lambda x, w: _conv("auto")(x, w), (X, W)),
    "dense_blocked": (lambda x, w: jl.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=NHWC),
        (rng.standard_normal((8, 40, 40, 32)).astype(np.float32),
         rng.standard_normal((3, 3, 32, 32)).astype(np.float32))),
    "depthwise": (lambda x, w: _conv("auto", WD, 4)(x, w), (X, WD)),
    # the kernel gradient's row scan in chunks of one column
    "depthwise_chunked": (_chunked_rows(_conv("auto", WD, 4)), (X, WD)),
    "grouped": (lambda x, w: jl.conv_general_dilated(
        x, w, (2, 2), "SAME", dimension_numbers=NHWC, feature_group_count=2),
        (X, rng.standard_normal((3, 3, 2, 8)).astype(np.float32))),
    "transpose": (lambda x, w: jl.conv_transpose(
        x, w, (2, 2), "SAME", dimension_numbers=NHWC),
        (X, rng.standard_normal((4, 4, 4, 3)).astype(np.float32))),
    "long1d": (lambda x, w: jl.conv_general_dilated(
        x, w, (1,), "SAME", feature_group_count=4,
        dimension_numbers=("NWC", "WIO", "NWC")),
        (rng.standard_normal((4, 300, 4)).astype(np.float32),
         rng.standard_normal((70, 1, 4)).astype(np.float32))),
    "strided_1d": (lambda x, w: jl.conv_general_dilated(
        x, w, (2,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")),
        (rng.standard_normal((4, 50, 8)).astype(np.float32),
         rng.standard_normal((5, 8, 6)).astype(np.float32))),
    "friendly_conv": (lambda x, w: jaxconv.conv(x, w, padding="SAME",
                                                padding_mode="reflect"), (X, W)),
    "friendly_conv_transpose": (lambda x, w: jaxconv.conv_transpose(
        x, w, stride=2, padding=1, output_padding=1),
        (X, rng.standard_normal((3, 3, 4, 6)).astype(np.float32))),
    "depthwise_conv": (lambda x, w: jaxconv.depthwise_conv(x, w, padding="SAME"),
                       (X, WD)),
    "max_pool": (lambda x: jaxconv.max_pool(x, (3, 3), stride=2, padding="SAME"),
                 (X,)),
    "avg_pool": (lambda x: jaxconv.avg_pool(x, (2, 2)), (X,)),
}
for _name, (_f, _args) in EXPLICIT_CASES.items():
    check(f"explicit_{_name}")(lambda f=_f, a=_args: _explicit(f, a))


@check("explicit_nn_model")
def _():
    nn = jaxconv.nn
    model = nn.Sequential([nn.Conv(8, (3, 3), padding="SAME"), nn.Relu(),
                           nn.DepthwiseConv((3, 3), padding="SAME"), nn.MaxPool((2, 2)),
                           nn.GlobalAvgPool(), nn.Dense(3)])
    params, _ = model.init(jax.random.key(0), X.shape[1:])
    return _explicit(lambda x: model.apply(params, x), (X,))


@check("explicit_out_sharding")
def _():
    emesh = _explicit_mesh()
    with jax.set_mesh(emesh):
        x = jax.device_put(X, NamedSharding(emesh, P("d")))
        out = jax.jit(lambda x, w: jl.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=NHWC, out_sharding=P("d")))(x, W)
    _close(out, _conv("auto")(X, W), "explicit out_sharding")
    if out.sharding.spec[0] != "d":
        raise AssertionError(f"requested P('d'), got {out.sharding}")
    return f"output spec {out.sharding.spec}"


if __name__ == "__main__":
    if jax.device_count() < 4:
        raise SystemExit(f"expected 4 devices, got {jax.devices()}")
    print(json.dumps(run_checks()))
