"""Optimizers (`ff.optim`) and their schedules (`ff.optim.schedules`); see optimizers.py."""
from . import schedules
from .optimizers import SGD, Adam, AdamW, Optimizer

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "schedules"]
