"""Train a small CNN built from ``jaxconv.nn`` on scikit-learn's digits.

The 1,797 8x8 grayscale digits bundled with scikit-learn (no download) are
split 75/25; a three-conv network is trained with optax's Adam and the script
ends with the line ``test accuracy: 0.xxxx`` (about 0.98-0.99 in the full
setting).  Every convolution and pooling runs through jaxconv, forward and
backward.

    python examples/train_digits.py
    JAXCONV_EXAMPLE_QUICK=1 python examples/train_digits.py   # smoke test

Other examples (feature_visualization.py) import ``load_digits``,
``build_model`` and ``train`` from here.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import QUICK  # noqa: E402

from jaxconv import nn  # noqa: E402
from jaxconv._progress import Progress  # noqa: E402


def load_digits(seed: int = 0):
    """``(x_train, y_train, x_test, y_test)``; x is ``(N, 8, 8, 1)`` in [0, 1]."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    digits = _load()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    return x_train, y_train, x_test, y_test


def build_model() -> nn.Sequential:
    """conv-relu-conv-relu-pool-conv-relu-pool-dense: 8x8x1 -> 10 logits."""
    return nn.Sequential([
        nn.Conv(32, (3, 3), padding="SAME"), nn.Relu(),
        nn.Conv(32, (3, 3), padding="SAME"), nn.Relu(),
        nn.MaxPool((2, 2)),                                   # 4x4
        nn.Conv(64, (3, 3), padding="SAME"), nn.Relu(),
        nn.MaxPool((2, 2)),                                   # 2x2
        nn.Flatten(), nn.Dropout(0.2), nn.Dense(10),
    ])


def accuracy(model, params, x, y) -> float:
    logits = jax.jit(model.apply)(params, x)
    return float(jnp.mean(jnp.argmax(logits, -1) == y))


def train(model, data, *, epochs: int, batch_size: int = 64, lr: float = 3e-3,
          seed: int = 0, verbose: bool = True):
    """Train with Adam on softmax cross-entropy; returns the parameters."""
    x_train, y_train, x_test, y_test = data
    key = jax.random.key(seed)
    key, init_key = jax.random.split(key)
    params, _ = model.init(init_key, x_train.shape[1:])
    schedule = optax.cosine_decay_schedule(
        lr, max(1, epochs * (len(x_train) // batch_size)))
    opt = optax.adam(schedule)
    opt_state = opt.init(params)

    def loss_fn(params, x, y, key):
        logits = model.apply(params, x, key=key, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, x, y, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    steps = max(1, len(x_train) // batch_size)
    shown = None if verbose else False  # None: drawn when stderr is a terminal
    with Progress(desc="epoch", total=epochs, enabled=shown) as bar:
        for _ in range(epochs):
            order = rng.permutation(len(x_train))
            losses = []
            for i in range(steps):
                idx = order[i * batch_size:(i + 1) * batch_size]
                key, sub = jax.random.split(key)
                params, opt_state, loss = step(params, opt_state, x_train[idx],
                                               y_train[idx], sub)
                losses.append(loss)
            info = None
            if bar.enabled:  # a terminal: the test accuracy after each epoch
                info = (f"loss {float(np.mean(losses)):.4f}  "
                        f"test acc {accuracy(model, params, x_test, y_test):.4f}")
            bar.update(1, info)
    return params


def main() -> None:
    data = load_digits()
    if QUICK:  # a tiny smoke setting: a few batches, one epoch
        data = (data[0][:256], data[1][:256], data[2][:128], data[3][:128])
    model = build_model()
    print(f"{len(data[0])} training and {len(data[2])} test digits, 8x8x1")
    print(model.summary(data[0].shape[1:]))
    params = train(model, data, epochs=1 if QUICK else 12)
    print(f"test accuracy: {accuracy(model, params, data[2], data[3]):.4f}")


if __name__ == "__main__":
    main()
