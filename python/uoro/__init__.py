"""uoro: online learning of recurrent networks with Unbiased Online Recurrent
Optimization (Tallec & Ollivier, 2017), on a C++/Eigen core."""

import math
from importlib.metadata import PackageNotFoundError, version
from typing import TypeVar

from uoro import cells, datasets
from uoro.learner import DivergenceError, Learner, load

_Loss = TypeVar("_Loss")


def to_bits(loss_in_nats: _Loss) -> _Loss:
    """A cross-entropy loss in nats (what `Learner.step` and `Learner.fit` return) in bits,
    e.g. bits per character; works on floats and numpy arrays."""
    return loss_in_nats / math.log(2)  # type: ignore[operator, return-value]


try:
    __version__ = version("uoro")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["DivergenceError", "Learner", "cells", "datasets", "load", "to_bits", "__version__"]
