"""Runtime checks (lang.check): an out-of-range label raises at call time, as in torch,
on both backends, through grad, training steps and bound calls (issue 13 item 7)."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.ir import lang as L

pytestmark = pytest.mark.usefixtures("backend")

LOGITS = np.zeros((3, 4), np.float32)
GOOD, BAD = np.array([0, 3, 1], np.int32), np.array([0, 4, 1], np.int32)
MESSAGE = r"cross_entropy: a label is outside \[0, 4\)"


@pytest.mark.parametrize("loss", [ff.nn.cross_entropy, ff.nn.nll_loss])
def test_an_out_of_range_label_raises(loss):
    cf = ff.compile(loss)
    np.testing.assert_allclose(cf(LOGITS, GOOD), 0.0 if loss is ff.nn.nll_loss else np.log(4.0), rtol=1e-6)
    with pytest.raises(ValueError, match=MESSAGE.replace("cross_entropy", loss.__name__)):
        cf(LOGITS, BAD)
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        cf(LOGITS, np.array([-1, 0, 0], np.int32))


def test_through_grad_a_training_step_and_a_bound_call():
    grad = ff.compile(ff.grad(ff.nn.cross_entropy))
    assert grad(LOGITS, GOOD).shape == (3, 4)
    with pytest.raises(ValueError, match=MESSAGE):
        grad(LOGITS, BAD)
    model = ff.nn.Linear(4, 4)
    params = model.init(0)
    step = ff.compile_train_step(lambda p, x, y: ff.nn.cross_entropy(model(p, x), y), ff.optim.SGD(0.1))
    state, x, labels = step.init(params), np.ones((3, 4), np.float32), GOOD.copy()
    assert np.isfinite(step(params, state, x, labels))
    with pytest.raises(ValueError, match=MESSAGE):
        step(params, state, x, BAD)
    bound = step.bind(params, state, x, labels)
    assert np.isfinite(bound())
    labels[1] = 7  # refilled in place: the next bound call checks it
    with pytest.raises(ValueError, match=MESSAGE):
        bound()


def test_a_check_is_a_hidden_output_that_every_backend_computes():
    def f(x):
        L.check(x > 0, "x must be positive")
        return ff.log(x)

    cf = ff.compile(f)
    np.testing.assert_allclose(cf(np.ones(3)), 0.0)
    with pytest.raises(ValueError, match="x must be positive"):
        cf(np.array([1.0, -1.0, 2.0]))
    lowered = cf.last_lowered
    assert lowered.traced.checks == ("x must be positive",)
    assert str(lowered.graph.output_types[-1]) == "i32[]"  # the flag, after the function's outputs
