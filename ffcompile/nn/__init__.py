"""Neural-network modules, losses, initializers (`ff.nn`)."""
from . import init
from .activations import (ELU, GELU, Activation, LeakyReLU, LogSigmoid, LogSoftmax, Mish, PReLU, ReLU, SiLU,
                          Sigmoid, Sinc, Softmax, Softplus, Softsign, Step, Swish, Tanh)
from .dropout import Dropout
from .embedding import Embedding
from .layers import Dense, Linear, Sequential, mlp
from .losses import binary_cross_entropy_with_logits, cross_entropy, mse, nll_loss
from .module import Module, Param
from .normalization import LayerNorm

__all__ = [
    "Activation", "Dense", "Dropout", "ELU", "Embedding", "GELU", "LayerNorm", "LeakyReLU", "Linear", "LogSigmoid", "LogSoftmax",
    "Mish", "Module", "PReLU", "Param", "ReLU", "Sequential", "SiLU", "Sigmoid", "Sinc", "Softmax", "Softplus",
    "Softsign", "Step", "Swish", "Tanh", "binary_cross_entropy_with_logits", "cross_entropy", "init", "mlp", "mse",
    "nll_loss",
]
