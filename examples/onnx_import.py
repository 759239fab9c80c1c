"""A model nobody here wrote: scikit-learn's MLPClassifier, through ONNX, compiled and fine-tuned.

1. Train scikit-learn's MLPClassifier briefly on the bundled 8x8 digits (no download).
2. Convert it with skl2onnx and load it with ff.onnx.load: predict_proba agrees.
3. Fine-tune the imported weights with ff.compile_train_step (Adam, cross-entropy on
   the logits, i.e. the Softmax's input) and report the test accuracy before and after.
4. Export the fine-tuned network with ff.onnx.export and check it under onnxruntime.

    python examples/onnx_import.py [--epochs 10] [--backend numpy]
"""
from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from skl2onnx import to_onnx

import ffcompile as ff


@dataclass
class Report:
    proba_max_error: float  # ffcompile's predict_proba against scikit-learn's
    accuracy_before: float
    accuracy_after: float
    onnxruntime_max_error: float  # the exported fine-tuned model against ffcompile


def digits_split():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int32), test_size=0.25, random_state=0, stratify=y)


def logits_name(proto) -> str:
    """The value the classifier's Softmax normalizes."""
    (softmax,) = [n for n in proto.graph.node if n.op_type == "Softmax"]
    return softmax.input[0]


def run(epochs: int = 10, batch: int = 64, backend: str | None = None) -> Report:
    x_train, x_test, y_train, y_test = digits_split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopped early on purpose
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=10, random_state=0).fit(x_train, y_train)
    proto = to_onnx(clf, x_train[:1], options={"zipmap": False})

    # The label output needs ArgMax and an ai.onnx.ml op: load only the probabilities.
    model = ff.onnx.load(proto, outputs=["probabilities"])
    predict = ff.compile(model, backend=backend)
    proba = predict(model.params, x_test)
    proba_error = float(np.abs(proba - clf.predict_proba(x_test)).max())
    before = float(np.mean(proba.argmax(1) == y_test))

    logits = ff.onnx.load(proto, outputs=[logits_name(proto)])
    params = {k: v.copy() for k, v in logits.params.items()}

    def loss(params, x, labels):
        return ff.nn.cross_entropy(logits(params, x), labels)
    step = ff.compile_train_step(loss, ff.optim.Adam(3e-3), backend=backend)
    state = step.init(params)
    rng = np.random.default_rng(0)
    usable = len(x_train) - len(x_train) % batch  # one batch shape, one compiled program
    for _ in range(epochs):
        order = rng.permutation(len(x_train))[:usable].reshape(-1, batch)
        for idx in order:
            step(params, state, x_train[idx], y_train[idx])
    tuned = predict(params, x_test)
    after = float(np.mean(tuned.argmax(1) == y_test))

    import onnxruntime as ort
    exported = ff.onnx.export(model, params, x_test)
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_proba = session.run(None, {session.get_inputs()[0].name: x_test})[0]
    return Report(proba_error, before, after, float(np.abs(ort_proba - tuned).max()))


def main(argv=None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backend", choices=["llvm", "numpy"], default=None)
    args = parser.parse_args(argv)
    report = run(args.epochs, backend=args.backend)
    print(f"predict_proba vs scikit-learn: max abs error {report.proba_max_error:.2e}")
    print(f"test accuracy: {report.accuracy_before:.4f} as imported -> "
          f"{report.accuracy_after:.4f} after {args.epochs} epochs of fine-tuning")
    print(f"exported fine-tuned model under onnxruntime: max abs error {report.onnxruntime_max_error:.2e}")
    return report


if __name__ == "__main__":
    main()
