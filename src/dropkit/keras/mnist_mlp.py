"""The classic Keras MNIST MLP with and without dropout, then MC-dropout uncertainty.

784-128-64-10 (ReLU, Dropout after each hidden layer, softmax), Adam (lr 1e-3), batch 32, the
architecture of the Keras MNIST example and of dropkit's torch recipe ``mnist-mlp``; trained on
the 10,000-digit MNIST training subset (shuffled once with seed 0, as the torch recipe does)
and tested on the official t10k set; then :func:`dropkit.keras.mc_predict` gives MC accuracy,
test log-likelihood, predictive entropy and mutual information (Gal & Ghahramani 2016,
arXiv:1506.02142). Choose the backend with ``KERAS_BACKEND`` before running::

    KERAS_BACKEND=jax python -m dropkit.keras.mnist_mlp --epochs 5 --rates 0 0.2 0.5
"""

from __future__ import annotations

import argparse

import numpy as np

import keras
from dropkit.data import load_mnist_test, load_mnist_train_subset

from .mc import mc_predict


def build_mlp(rate: float, hidden: tuple[int, ...] = (128, 64)) -> keras.Model:
    """``Dense(h) ReLU -> Dropout(rate)`` per hidden size, then ``Dense(10) softmax``."""
    layers: list = [keras.Input((784,))]
    for h in hidden:
        layers += [keras.layers.Dense(h, activation="relu"), keras.layers.Dropout(rate)]
    layers.append(keras.layers.Dense(10, activation="softmax"))
    return keras.Sequential(layers)


def load(data_path=None, n_train: int | None = None, n_test: int | None = None):
    """``((x_train, y_train), (x_test, y_test))``: float32 ``(N, 784)`` in [0, 1], int labels."""
    x_train, y_train = load_mnist_train_subset(data_path)
    x_test, y_test = load_mnist_test(data_path)
    order = np.random.default_rng(0).permutation(len(x_train))  # the subset is sorted by class
    x_train, y_train = x_train[order][:n_train], y_train[order][:n_train]

    def flat(images: np.ndarray) -> np.ndarray:
        return images.reshape(-1, 784).astype(np.float32) / 255.0

    return (flat(x_train), y_train), (flat(x_test[:n_test]), y_test[:n_test])


def run(
    data_path=None,
    *,
    rates: tuple[float, ...] = (0.0, 0.5),
    epochs: int = 5,
    batch_size: int = 32,
    n_train: int | None = None,
    n_test: int | None = None,
    mc_samples: int = 50,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train one MLP per rate; one row per rate: test accuracy and NLL (dropout off), MC
    accuracy and NLL, mean predictive entropy and mean mutual information (nats)."""
    (x_train, y_train), (x_test, y_test) = load(data_path, n_train, n_test)
    rows = []
    for rate in rates:
        keras.utils.set_random_seed(seed)
        model = build_mlp(rate)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=0)
        probs = keras.ops.convert_to_numpy(model.predict(x_test, batch_size=1024, verbose=0))
        picked = probs[np.arange(len(y_test)), y_test].astype(np.float64)
        mc = mc_predict(model, x_test, samples=mc_samples, targets=y_test)
        rows.append(
            {
                "rate": float(rate),
                "test_acc": float((probs.argmax(1) == y_test).mean()),
                "test_nll": float(-np.log(np.maximum(picked, 1e-12)).mean()),
                "mc_acc": float((mc.mean.argmax(1).numpy() == y_test).mean()),
                "mc_nll": -float(mc.log_likelihood),
                "entropy": float(mc.predictive_entropy.mean()),
                "mutual_information": float(mc.mutual_information.mean()),
            }
        )
    return rows


def markdown(rows: list[dict[str, float]]) -> str:
    """The rows as a Markdown table."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    lines += ["| " + " | ".join(f"{r[k]:.4g}" for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="data root (else $DROPKIT_DATA or cache)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-train", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument("--mc-samples", type=int, default=50)
    args = parser.parse_args(argv)
    rows = run(args.data, rates=tuple(args.rates), epochs=args.epochs, n_train=args.n_train,
               n_test=args.n_test, mc_samples=args.mc_samples)  # fmt: skip
    print(f"backend={keras.backend.backend()} epochs={args.epochs}")
    print(markdown(rows))


if __name__ == "__main__":
    main()
