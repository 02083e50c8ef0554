"""Data-parallel training: the batch sharded over every device.

On a CPU the script asks XLA for 4 host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``, set before jax is
imported unless ``XLA_FLAGS`` is already set); on a GPU/TPU host it uses the
real devices.  Parameters are replicated, the batch is split along a
``"batch"`` mesh axis with ``jax.sharding.NamedSharding``, and ``jax.jit``
inserts the gradient all-reduce: jaxconv's convolutions are ordinary JAX ops,
so nothing else changes.

    python examples/data_parallel.py
"""

from __future__ import annotations

import os
import sys

if "XLA_FLAGS" not in os.environ:  # must happen before jax is imported
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import QUICK  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

from jaxconv import nn  # noqa: E402


def main() -> None:
    devices = jax.devices()
    n = len(devices)
    mesh = Mesh(np.array(devices), ("batch",))
    print(f"{n} devices: {[str(d) for d in devices]}")

    model = nn.Sequential([
        nn.Conv(16, (3, 3), padding="SAME"), nn.Relu(), nn.MaxPool((2, 2)),
        nn.Conv(32, (3, 3), padding="SAME"), nn.Relu(), nn.GlobalAvgPool(),
        nn.Dense(10),
    ])
    params, _ = model.init(jax.random.key(0), (16, 16, 3))
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P("batch"))  # split the leading (batch) axis
    params = jax.device_put(params, replicated)
    opt_state = jax.device_put(opt_state, replicated)

    def loss_fn(params, x, y):
        logits = model.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    batch = 8 * n
    rng = np.random.default_rng(0)
    steps = 2 if QUICK else 20
    for i in range(steps):
        x = jax.device_put(rng.normal(size=(batch, 16, 16, 3)).astype(np.float32),
                           sharded)
        y = jax.device_put(rng.integers(0, 10, batch), sharded)
        if i == 0:
            shards = [s.data.shape for s in x.addressable_shards]
            print(f"batch {x.shape} split into {len(shards)} shards of {shards[0]}")
        params, opt_state, loss = step(params, opt_state, x, y)
        if i in (0, steps - 1):
            print(f"step {i + 1:>2}: loss {float(loss):.4f}")
    leaf = jax.tree.leaves(params)[0]
    print(f"parameters stay replicated: {leaf.sharding.is_fully_replicated}")
    print(f"one training step ran data-parallel over {n} devices")


if __name__ == "__main__":
    main()
