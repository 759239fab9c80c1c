"""One module per function of the ff. activation library (ffcompile.functions).

Parameter-free except PReLU, whose slope is learnable."""
from __future__ import annotations

from .. import functions as F
from . import init as initializers
from .module import Module, Param


class Activation(Module):
    """A parameter-free module applying `function` elementwise."""

    function = None  # set by each subclass (a staticmethod over ff. functions)

    def forward(self, params, x):
        return self.function(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Sigmoid(Activation):
    function = staticmethod(F.sigmoid)


class Tanh(Activation):
    function = staticmethod(F.tanh)


class Step(Activation):
    function = staticmethod(F.step)


class Softplus(Activation):
    function = staticmethod(F.softplus)


class ReLU(Activation):
    function = staticmethod(F.relu)


class Softsign(Activation):
    function = staticmethod(F.softsign)


class LogSigmoid(Activation):
    function = staticmethod(F.log_sigmoid)


class SiLU(Activation):
    function = staticmethod(F.silu)


Swish = SiLU


class Sinc(Activation):
    function = staticmethod(F.sinc)


class Mish(Activation):
    function = staticmethod(F.mish)


class ELU(Activation):
    def __init__(self, alpha: float = 1.0):
        self.alpha = float(alpha)

    def forward(self, params, x):
        return F.elu(x, self.alpha)

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha})"


class LeakyReLU(Activation):
    def __init__(self, slope: float = 0.01):
        self.slope = float(slope)

    def forward(self, params, x):
        return F.leaky_relu(x, self.slope)

    def __repr__(self) -> str:
        return f"LeakyReLU(slope={self.slope})"


class GELU(Activation):
    """approximate: "none" (exact erf form), "tanh", or "sigmoid" (x·σ(1.702x))."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh", "sigmoid"):
            raise ValueError(f"GELU: approximate must be 'none', 'tanh' or 'sigmoid', got {approximate!r}")
        self.approximate = approximate

    def forward(self, params, x):
        return F.gelu(x, self.approximate)

    def __repr__(self) -> str:
        return f"GELU(approximate={self.approximate!r})"


class Softmax(Activation):
    """softmax along `axis` (default the last), as torch.nn.Softmax(dim=axis)."""

    def __init__(self, axis: int = -1):
        self.axis = int(axis)

    def forward(self, params, x):
        return F.softmax(x, self.axis)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(axis={self.axis})"


class LogSoftmax(Softmax):
    """log_softmax along `axis` (default the last), as torch.nn.LogSoftmax(dim=axis)."""

    def forward(self, params, x):
        return F.log_softmax(x, self.axis)


class PReLU(Module):
    """Leaky ReLU with a learnable slope of shape (num_parameters,), broadcast over the last axis."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        self.num_parameters = int(num_parameters)
        self.init_slope = float(init)

    def param_specs(self):
        return {"slope": Param((self.num_parameters,), initializers.constant(self.init_slope))}

    def forward(self, params, x):
        return F.prelu(x, params["slope"])

    def __repr__(self) -> str:
        return f"PReLU(num_parameters={self.num_parameters})"
