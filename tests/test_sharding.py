"""Sharded inputs on a simulated 4-device CPU mesh.

The device count must be forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` before jax starts, so
the checks run in a subprocess (``tests/_sharding_worker.py``) and this pytest
process keeps its single device.  The worker reports one result per check:

* batch-sharded convs (every algorithm, dense and depthwise, their gradients,
  conv_transpose and the friendly ops) give the unsharded result, stay
  batch-sharded and compile without any ``all-gather``;
* inputs sharded over a spatial axis give the unsharded result;
* ``out_sharding`` is honoured: the output's sharding is the requested one;
* with Explicit mesh axes (sharding in types, ``jax.set_mesh``) every op, a
  ``jaxconv.nn`` model and their gradients give the unsharded result with
  a batch-sharded output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "_sharding_worker.py")
CHECKS = (
    ["control_all_gather_detected"]
    + [f"batch_{kind}_{algo}" for kind in ("dense", "depthwise")
     for algo in ("auto", "taps", "patches", "direct")]
    + ["batch_gradient_auto"]
    + [f"spatial_{kind}_{algo}" for kind in ("dense", "depthwise")
       for algo in ("auto", "taps", "patches")]
    + ["spatial_long1d_auto", "out_sharding", "conv_transpose_batch_sharded",
       "friendly_ops_batch_sharded"]
    + [f"explicit_{name}" for name in (
        "dense", "dense_blocked", "depthwise", "depthwise_chunked", "grouped",
        "transpose", "long1d", "strided_1d", "friendly_conv", "friendly_conv_transpose",
        "depthwise_conv",
        "max_pool", "avg_pool", "nn_model", "out_sharding")]
)


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, WORKER], capture_output=True, text=True,
                          env=env, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"sharding worker failed ({proc.returncode}):\n"
                    f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", CHECKS)
def test_sharding(results, name):
    assert name in results, f"worker did not run {name!r}"
    outcome = results[name]
    assert outcome["ok"], outcome["detail"]


def test_main_process_unaffected():
    import jax

    assert "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")
    assert jax.device_count() >= 1
