"""The influence-balancing task of Tallec & Ollivier (2017), Section 4, eq. 18–19.

Linear dynamics ``s_{t+1} = A s_t + θ x`` with ``A_ii = A_i,i+1 = 1/2``, n units and the
constant input ``x = (1, …, 1, −1, …, −1)`` (p plus signs, n − p minus signs); the loss
``½ (s¹_t − 1)²`` targets the shallowest unit. θ has a positive influence on s¹ in the
short term and, with enough minus signs, a negative one in the long run: truncated
gradients get its sign wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from uoro.learner import Learner


def signs(n: int = 23, n_minus: int = 13) -> np.ndarray:
    """The input ``(1, …, 1, −1, …, −1)`` with ``n − n_minus`` plus signs."""
    if not 0 <= n_minus <= n:
        raise ValueError(f"n_minus must be in [0, n={n}]; got {n_minus}")
    return np.concatenate([np.ones(n - n_minus), -np.ones(n_minus)])


def learner(
    n: int = 23,
    n_minus: int = 13,
    theta: float = 0.0,
    *,
    algorithm: str = "uoro",
    lr: float = 1e-3,
    lr_decay: float = 1.0,
    dtype: str = "float64",
    **options: Any,
) -> Learner:
    """A learner of the influence-balancing task: one scalar parameter θ (starting at
    ``theta``), a fixed readout of unit 1, squared error, SGD with the paper's schedule
    ``η_t = η / (1 + √t)`` (``lr_decay=1``)."""
    model = Learner(
        "influence",
        n,
        n,
        1,
        loss="squared_error",
        algorithm=algorithm,
        optimizer="sgd",
        lr=lr,
        lr_decay=lr_decay,
        train_readout=False,
        dtype=dtype,
        **options,
    )
    readout = np.zeros((1, n))
    readout[0, 0] = 1.0
    model.set_parameters(
        {"theta": np.array([theta]), "readout.weight": readout, "readout.bias": np.zeros(1)}
    )
    return model


def stream(
    steps: int, n: int = 23, n_minus: int = 13, dtype: str = "float64"
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` samples of the task: the constant input and the target 1."""
    xs = np.tile(signs(n, n_minus), (steps, 1)).astype(dtype)
    return xs, np.ones((steps, 1), dtype=dtype)
