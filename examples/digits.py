"""Train a 64-128-128-10 ReLU MLP on scikit-learn's bundled 8x8 digits (no download).

The whole training step (forward, cross-entropy, backward, Adam update) is one
compiled program. Prints a progress bar and a final report.

    python examples/digits.py [--epochs N] [--batch 64] [--lr 1e-3] [--backend numpy] [--dropout 0.2]

With --dropout P, a Dropout(P) follows each hidden ReLU; every step gets its own key
(split once from the seed), passed to the compiled step as an argument.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import ffcompile as ff

model = ff.nn.Sequential(ff.nn.Linear(64, 128), ff.nn.ReLU(), ff.nn.Linear(128, 128), ff.nn.ReLU(),
                         ff.nn.Linear(128, 10))


def loss(params, x, labels):
    return ff.nn.cross_entropy(model(params, x), labels)


def with_dropout(p: float) -> ff.nn.Sequential:
    """The same network with Dropout(p) after each hidden ReLU (same initial weights:
    dropout has no parameters)."""
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, ff.nn.ReLU):
            layers.append(ff.nn.Dropout(p))
    return ff.nn.Sequential(*layers)


@dataclass
class Report:
    train_accuracy: float
    test_accuracy: float
    first_loss: float
    last_loss: float
    steps: int
    seconds: float  # of every step but the first, which also compiled
    first_step_seconds: float  # trace + compile + one step
    per_class_accuracy: np.ndarray


def load(seed: int = 0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    return train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)


def train(epochs: int = 30, batch: int = 64, lr: float = 1e-3, seed: int = 0, backend=None,
          progress: bool = True, dropout: float = 0.0) -> Report:
    x_train, x_test, y_train, y_test = load(seed)
    net = with_dropout(dropout) if dropout else model

    def dropout_loss(params, x, labels, key):
        return ff.nn.cross_entropy(net(params, x, key=key), labels)

    params = net.init(seed)
    step = ff.compile_train_step(dropout_loss if dropout else loss, ff.optim.Adam(lr), backend=backend)
    opt_state = step.init(params)
    predict = ff.compile(net, backend=backend)  # no key: evaluation, dropout is the identity
    rng = np.random.default_rng(seed)
    batches = len(x_train) // batch  # full batches only: one compiled signature
    keys = ff.random.split(ff.random.key(seed), epochs * batches) if dropout else None
    losses = []
    first_step_seconds = None
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="digits", unit="epoch", disable=not progress)
    # GEMMs of 64x128 are too small to split: BLAS threads would only spin against each other.
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in bar:
            order = rng.permutation(len(x_train))
            for b in range(batches):
                idx = order[b * batch:(b + 1) * batch]
                key = () if keys is None else (keys[len(losses)],)
                losses.append(float(step(params, opt_state, x_train[idx], y_train[idx], *key)))
                if first_step_seconds is None:  # the first call traced and compiled the step
                    first_step_seconds = time.perf_counter() - start
                    start = time.perf_counter()
            bar.set_postfix(loss=f"{np.mean(losses[-batches:]):.4f}")
    seconds = time.perf_counter() - start
    test_pred = predict(params, x_test).argmax(axis=1)
    per_class = np.array([np.mean(test_pred[y_test == c] == c) for c in range(10)])
    return Report(
        train_accuracy=float(np.mean(predict(params, x_train).argmax(axis=1) == y_train)),
        test_accuracy=float(np.mean(test_pred == y_test)),
        first_loss=losses[0], last_loss=float(np.mean(losses[-batches:])),
        steps=len(losses), seconds=seconds, first_step_seconds=first_step_seconds,
        per_class_accuracy=per_class)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout after each hidden layer")
    args = parser.parse_args(argv)
    report = train(args.epochs, args.batch, args.lr, backend=args.backend, dropout=args.dropout)
    print(f"\n{report.steps} training steps: the first (trace + compile + step) in "
          f"{report.first_step_seconds:.3f} s, the other {report.steps - 1} in {report.seconds:.2f} s "
          f"({report.seconds / (report.steps - 1) * 1e3:.3f} ms/step)")
    print(f"loss {report.first_loss:.4f} -> {report.last_loss:.4f}")
    print(f"train accuracy {report.train_accuracy:.2%}   test accuracy {report.test_accuracy:.2%}")
    print("per-class test accuracy: " + "  ".join(
        f"{c}:{a:.0%}" for c, a in enumerate(report.per_class_accuracy)))


if __name__ == "__main__":
    main()
