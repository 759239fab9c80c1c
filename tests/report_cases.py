"""The graphs the report tests open: the digits training step and a 32-layer remat plan."""
import ffcompile as ff
from examples.remat_study import mlp_args, mlp_loss
from ffcompile import zoo


def digits_step(**options):
    """The Lowered SGD training step of the digits MLP, with every pass dumped."""
    workload = zoo.get("digits")
    params, (x, y) = workload.init(), workload.batch()
    step = ff.compile_train_step(workload.loss, ff.optim.SGD(0.01), dump_after="all", **options)
    return step.lower(params, step.init(params), x, y)


def deep_remat_plan(layers: int = 32, remat: str = "sqrt"):
    """value_and_grad of the tanh MLP of examples/remat_study.py, `layers` deep, with a remat plan."""
    return ff.compile(ff.value_and_grad(mlp_loss), remat=remat, dump_after="all").lower(*mlp_args(layers, 16, 8))
