"""Feature visualisation: which inputs make a channel of the digits CNN fire?

Trains the CNN of ``train_digits.py`` (a few epochs), then runs gradient
ascent on the *input* (``jax.grad`` through jaxconv's convolutions and
pooling): starting from faint noise, each picture is pushed towards making
one chosen channel (of the last conv layer) or one output class as active as
possible, with a small L2 penalty and pixels kept in [0, 1].  Saves the
pictures to ``example-output/feature_visualization.png``.

    python examples/feature_visualization.py
    JAXCONV_EXAMPLE_QUICK=1 python examples/feature_visualization.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import QUICK, output_dir, subplots  # noqa: E402
from train_digits import accuracy, build_model, load_digits, train  # noqa: E402

from jaxconv import nn  # noqa: E402


def visualise(objective, n: int, *, steps: int, lr: float = 0.05, l2: float = 1e-3,
              seed: int = 0):
    """Gradient ascent on ``n`` inputs; ``objective(x) -> (n,)`` scores."""
    x = 0.5 + 0.01 * jax.random.normal(jax.random.key(seed), (n, 8, 8, 1))
    opt = optax.adam(lr)
    state = opt.init(x)

    def loss(x):  # minimise -score + l2 * |x|^2, summed over the n pictures
        return jnp.sum(-objective(x) + l2 * jnp.sum(x**2, axis=(1, 2, 3)))

    @jax.jit
    def step(x, state):
        g = jax.grad(loss)(x)
        updates, state = opt.update(g, state)
        return jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0), state

    for _ in range(steps):
        x, state = step(x, state)
    return x, objective(x)


def main() -> None:
    data = load_digits()
    if QUICK:
        data = (data[0][:256], data[1][:256], data[2][:128], data[3][:128])
    model = build_model()
    print("training the digits CNN of train_digits.py ...")
    params = train(model, data, epochs=1 if QUICK else 10)
    print(f"test accuracy: {accuracy(model, params, data[2], data[3]):.4f}")

    # The network up to the last conv + relu: (8, 8, 1) -> (4, 4, 64).
    cut = 7
    trunk = nn.Sequential(model.layers[:cut])
    trunk_params = params[:cut]
    channels = np.arange(8)
    steps = 10 if QUICK else 200

    def channel_score(x):  # mean activation of channel channels[i] for picture i
        act = trunk.apply(trunk_params, x)
        return jnp.mean(act, axis=(1, 2))[jnp.arange(len(channels)), channels]

    def class_score(x):  # logit of class i for picture i
        return model.apply(params, x)[jnp.arange(10), jnp.arange(10)]

    feats, feat_scores = visualise(channel_score, len(channels), steps=steps)
    digits, digit_scores = visualise(class_score, 10, steps=steps)
    preds = np.asarray(jnp.argmax(model.apply(params, digits), -1))
    print(f"channel activations after ascent: {np.round(feat_scores, 2)}")
    print(f"class logits after ascent: {np.round(digit_scores, 1)}")
    print(f"the network classifies the class pictures as {preds.tolist()}")

    fig, axes = subplots(2, 10, figsize=(14, 3.4))
    for ax in axes.flat:
        ax.axis("off")
    for i, c in enumerate(channels):
        axes[0, i].imshow(np.asarray(feats[i, ..., 0]), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"conv3 ch {c}", fontsize=8)
    for i in range(10):
        axes[1, i].imshow(np.asarray(digits[i, ..., 0]), cmap="gray", vmin=0, vmax=1)
        axes[1, i].set_title(f"class {i}", fontsize=8)
    fig.suptitle("inputs maximising a channel of the last conv layer (top) "
                 "and a class logit (bottom)")
    path = os.path.join(output_dir(), "feature_visualization.png")
    fig.savefig(path, dpi=72)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
