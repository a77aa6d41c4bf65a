"""Optimizer objects over lists of NumPy arrays, one module per algorithm.

Each module holds an algorithm's spec (:mod:`._spec`: hyperparameters and
their checks; slots and counters come from its C header) and its class; the
shared machinery (param groups, per-array state, the plan, state_dict) is in
:mod:`._base`.
"""
from ._base import Optimizer
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .lamb import LAMB
from .lion import Lion
from .muon import Muon
from .nadam import NAdam
from .radam import RAdam
from .rmsprop import RMSprop
from .schedule_free import AdamWScheduleFree, SGDScheduleFree
from .sgd import SGD
from .sparse_adam import SparseAdam

__all__ = ["Optimizer", "Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "AdamWScheduleFree", "Adamax", "LAMB",
           "Lion", "Muon", "NAdam", "RAdam", "RMSprop", "SGD", "SGDScheduleFree",
           "SparseAdam"]
