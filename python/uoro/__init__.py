"""uoro: online learning of recurrent networks with Unbiased Online Recurrent
Optimization (Tallec & Ollivier, 2017), on a C++/Eigen core."""

from importlib.metadata import PackageNotFoundError, version

from uoro import datasets
from uoro.learner import DivergenceError, Learner, load

try:
    __version__ = version("uoro")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["DivergenceError", "Learner", "datasets", "load", "__version__"]
