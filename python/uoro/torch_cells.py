"""PyTorch modules as uoro cells (the optional ``torch`` extra).

`TorchCell` wraps any ``torch.nn.Module`` mapping a batch of inputs and states to the
next states, ``module(x, s) -> s_next`` with ``x`` of shape ``(B, input_size)`` and
``s`` of shape ``(B, state_size)``, rows independent of one another (as for every
recurrent cell). ``torch.nn.LSTMCell``, whose state is a pair, is taken as the state
``[h; c]``. The cell is batched: a learner with B streams calls each function once per
tick on all streams. The calls of one step share one autograd graph of the forward pass:
the vector–Jacobian products are backward passes through it (one per stream, since the
parameter side is needed per stream; ``torch.func.vmap`` was measured slower in eager
PyTorch), and the tangent is the gradient of ``uᵀ ∂s'/∂s`` with respect to ``u`` (a
double backward pass, faster here than forward-mode AD). The calls run on a private copy
of the module; the module itself is only read at construction, the learner owns θ from
then on, and `TorchCell.to_torch` writes the learned values back into it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


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
        self._work = copy.deepcopy(module)  # loaded with the learner's θ at every call
        self._params = list(self._work.named_parameters())
        self._last: _Graph | None = None
        self.initial_parameters = {
            name: p.detach().cpu().to(torch.float64).numpy().copy()
            for name, p in module.named_parameters()
        }

    # ---- the cell protocol

    def forward(self, x: np.ndarray, s: np.ndarray, theta: dict[str, np.ndarray]) -> np.ndarray:
        return self._graph(x, s, theta).out.detach().numpy()

    def jvp_state(
        self, x: np.ndarray, s: np.ndarray, theta: dict[str, np.ndarray], s_dot: np.ndarray
    ) -> np.ndarray:
        graph = self._graph(x, s, theta)
        if graph.transposed is None or graph.u is None:
            # uᵀ ∂s'/∂s as a function of u, once per graph: its gradient along s_dot is the
            # tangent (∂s'/∂s) s_dot, one backward pass per call.
            graph.u = torch.zeros_like(graph.out, requires_grad=True)
            graph.transposed = torch.autograd.grad(
                graph.out, graph.state, graph.u, create_graph=True
            )[0]
        tangent = torch.autograd.grad(
            graph.transposed, graph.u, torch.from_numpy(s_dot), retain_graph=True
        )[0]
        return tangent.numpy()

    def vjp(
        self, x: np.ndarray, s: np.ndarray, theta: dict[str, np.ndarray], c: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        graph = self._graph(x, s, theta)
        leaves = [graph.state, *(p for _, p in self._params)]
        cotangents = torch.from_numpy(c)
        c_s = np.empty_like(s)
        c_theta = {name: np.empty((len(s),) + p.shape, s.dtype) for name, p in self._params}
        for b in range(len(s)):  # the parameter side is needed per stream
            grads = torch.autograd.grad(
                graph.out[b], leaves, cotangents[b], retain_graph=True, allow_unused=True
            )
            c_s[b] = 0.0 if grads[0] is None else grads[0][b].numpy()
            for (name, _), g in zip(self._params, grads[1:]):
                c_theta[name][b] = 0.0 if g is None else g.numpy()
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

    def _graph(self, x: np.ndarray, s: np.ndarray, theta: dict[str, np.ndarray]) -> _Graph:
        """The autograd graph of s' = F(x, s, θ), kept across the calls of one step (they
        share x, s and θ), rebuilt when any of them changes."""
        graph = self._last
        if (
            graph is not None
            and np.array_equal(graph.x, x)
            and np.array_equal(graph.s, s)
            and all(np.array_equal(graph.theta[name], theta[name]) for name, _ in self._params)
        ):
            return graph
        with torch.no_grad():
            for name, p in self._params:
                value = torch.tensor(theta[name])  # a copy: θ's views are read-only
                if p.dtype != value.dtype:
                    p.data = p.data.to(value.dtype)
                p.copy_(value)
        state = torch.tensor(s, requires_grad=True)
        out = self._call(torch.from_numpy(x), state)
        self._last = _Graph(x, s, {k: np.array(v) for k, v in theta.items()}, state, out)
        return self._last

    def _call(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        if self._lstm:
            n = self.state_size // 2
            h, c = self._work(x, (s[..., :n], s[..., n:]))
            return torch.cat([h, c], dim=-1)
        out: torch.Tensor = self._work(x, s)
        return out


@dataclass
class _Graph:
    x: np.ndarray
    s: np.ndarray
    theta: dict[str, np.ndarray]
    state: torch.Tensor
    out: torch.Tensor
    u: torch.Tensor | None = None
    transposed: torch.Tensor | None = None


def _attribute(module: torch.nn.Module, name: str) -> int:
    value = getattr(module, name, None)
    if value is None:
        raise ValueError(f"{type(module).__name__} has no {name}: give {name}=")
    return int(value)
