"""Optimizer objects over lists of NumPy arrays, one module per algorithm.

Each module holds an algorithm's spec (:mod:`._spec`: hyperparameters and
their checks; slots and counters come from its C header) and its class; the
shared machinery (param groups, per-array state, the plan, state_dict) is in
:mod:`._base`.
"""
from ._base import Optimizer
from .adam import Adam, AdamW
from .lamb import LAMB
from .sgd import SGD

__all__ = ["Optimizer", "Adam", "AdamW", "LAMB", "SGD"]
