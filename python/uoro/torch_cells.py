"""PyTorch modules as uoro cells (the optional ``torch`` extra).

`TorchCell` wraps any ``torch.nn.Module`` mapping a batch of inputs and states to the
next states, ``module(x, s) -> s_next`` with ``x`` of shape ``(B, input_size)`` and
``s`` of shape ``(B, state_size)``, rows independent of one another (as for every
recurrent cell). ``torch.nn.LSTMCell``, whose state is a pair, is taken as the state
``[h; c]``. The cell is batched: a learner with B streams calls the forward pass and
the tangent (forward-mode AD) once per tick on all streams; the vector–Jacobian product
(reverse-mode AD) runs one backward pass per stream, since its parameter side is needed
per stream (``torch.func.vmap`` over the streams was measured slower than the loop in
eager PyTorch). The calls run on a private copy of the module; the module itself is
only read at construction, the learner owns θ from then on, and `TorchCell.to_torch`
writes the learned values back into it.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from torch.autograd import forward_ad


class TorchCell:
    """A `uoro.cells.Cell` from a ``torch.nn.Module``; see the module's docstring.

    Args:
        module: maps ``(x, s)`` batches to ``s_next`` (or a ``torch.nn.LSTMCell``).
        input_size: defaults to ``module.input_size`` when the module has one.
        state_size: defaults to ``module.hidden_size`` (twice that for an LSTMCell).
        hidden_size: how many leading state entries the readout sees (default: all of
            the state; ``h`` for an LSTMCell).
    """

    batched = True  # every function takes (B, ...) arrays: one call per tick

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        input_size: int | None = None,
        state_size: int | None = None,
        hidden_size: int | None = None,
    ) -> None:
        self.module = module
        self._lstm = isinstance(module, torch.nn.LSTMCell)
        self.input_size = int(
            input_size if input_size is not None else _attribute(module, "input_size")
        )
        units = getattr(module, "hidden_size", None)
        if state_size is None:
            if units is None:
                raise ValueError(f"{type(module).__name__} has no hidden_size: give state_size=")
            state_size = 2 * units if self._lstm else units
        self.state_size = int(state_size)
        if hidden_size is None and self._lstm:
            hidden_size = self.state_size // 2
        self.hidden_size = int(hidden_size if hidden_size is not None else self.state_size)
        self.names = [name for name, _ in module.named_parameters()]
        if not self.names:
            raise ValueError(f"{type(module).__name__} has no parameters to learn")
        # Forward-mode AD loads its decompositions on first use, through a PyTorch API that
        # warns of its own deprecation: load them here, once, with that warning silenced.
        with warnings.catch_warnings(), torch.no_grad(), forward_ad.dual_level():
            warnings.simplefilter("ignore", DeprecationWarning)
            forward_ad.make_dual(torch.zeros(1), torch.ones(1))
        self._work = copy.deepcopy(module)  # loaded with the learner's θ at every call
        self._params = list(self._work.named_parameters())
        self.initial_parameters = {
            name: p.detach().cpu().to(torch.float64).numpy().copy()
            for name, p in module.named_parameters()
        }

    # ---- the cell protocol

    def forward(self, x: np.ndarray, s: np.ndarray, theta: dict[str, np.ndarray]) -> np.ndarray:
        self._load(theta)
        with torch.no_grad():
            return self._call(_tensor(x), _tensor(s)).numpy()

    def jvp_state(
        self, x: np.ndarray, s: np.ndarray, theta: dict[str, np.ndarray], s_dot: np.ndarray
    ) -> np.ndarray:
        self._load(theta)
        with torch.no_grad(), forward_ad.dual_level():
            state = forward_ad.make_dual(_tensor(s), _tensor(s_dot))
            tangent = forward_ad.unpack_dual(self._call(_tensor(x), state)).tangent
            return tangent.numpy()

    def vjp(
        self, x: np.ndarray, s: np.ndarray, theta: dict[str, np.ndarray], c: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        # One backward pass per stream: the parameter side is needed per stream.
        self._load(theta)
        inputs, states, cotangents = _tensor(x), _tensor(s), _tensor(c)
        c_s = np.empty_like(s)
        c_theta = {name: np.empty((len(s),) + p.shape, s.dtype) for name, p in self._params}
        leaves = [p for _, p in self._params]
        for b in range(len(s)):
            state = states[b : b + 1].requires_grad_()
            grads = torch.autograd.grad(
                self._call(inputs[b : b + 1], state), [state, *leaves], cotangents[b : b + 1]
            )
            c_s[b] = grads[0][0].numpy()
            for (name, _), g in zip(self._params, grads[1:]):
                c_theta[name][b] = g.numpy()
        return c_s, c_theta

    # ---- back to PyTorch

    def to_torch(self, learner: Any) -> torch.nn.Module:
        """Writes a learner's values of this cell's parameters into the module (in the
        module's dtype and device) and returns the module."""
        values = learner.parameters()
        with torch.no_grad():
            for name, p in self.module.named_parameters():
                p.copy_(torch.from_numpy(np.ascontiguousarray(values[name])).to(p.dtype))
        return self.module

    def _load(self, theta: dict[str, np.ndarray]) -> None:
        """The learner's θ into the module, in the dtype of the learner's arrays."""
        with torch.no_grad():
            for name, p in self._params:
                value = torch.tensor(theta[name])  # a copy: θ's views are read-only
                if p.dtype != value.dtype:
                    p.data = p.data.to(value.dtype)
                p.copy_(value)

    def _call(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self._lstm:
            n = self.state_size // 2
            h, c = self._work(x, (s[..., :n], s[..., n:]))
            return torch.cat([h, c], dim=-1)
        out: torch.Tensor = self._work(x, s)
        return out


def _attribute(module: torch.nn.Module, name: str) -> int:
    value = getattr(module, name, None)
    if value is None:
        raise ValueError(f"{type(module).__name__} has no {name}: give {name}=")
    return int(value)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a)  # the arrays passed in are the function's own copies
