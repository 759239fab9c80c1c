"""Learn XOR with a 2-8-1 MLP (tanh hidden, sigmoid out, MSE): the lecture's first example.

    python examples/xor.py [--steps N]
"""
from __future__ import annotations

import argparse

import numpy as np

import ffcompile as ff

INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
TARGETS = np.array([[0], [1], [1], [0]], dtype=np.float32)

model = ff.nn.Sequential(ff.nn.Linear(2, 8), ff.nn.Tanh(), ff.nn.Linear(8, 1), ff.nn.Sigmoid())


def loss(params, x, y):
    return ff.nn.mse(model(params, x), y)


def train(steps: int = 2000, lr: float = 0.5, seed: int = 0):
    """Train with SGD + momentum; returns (params, losses, predictions)."""
    params = model.init(seed)
    step = ff.compile_train_step(loss, ff.optim.SGD(lr, momentum=0.9))
    opt_state = step.init(params)
    losses = [float(step(params, opt_state, INPUTS, TARGETS)) for _ in range(steps)]
    predict = ff.compile(model)
    return params, losses, predict(params, INPUTS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args(argv)
    _, losses, predictions = train(args.steps)
    print(f"loss: {losses[0]:.4f} -> {losses[-1]:.6f} after {args.steps} steps")
    print(" a  b | xor  net")
    for (a, b), target, p in zip(INPUTS.astype(int), TARGETS[:, 0].astype(int), predictions[:, 0]):
        print(f" {a}  {b} |  {target}   {p:.3f}  {'ok' if round(float(p)) == target else 'WRONG'}")


if __name__ == "__main__":
    main()
