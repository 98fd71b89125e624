"""Your own model: the protocol of a recurrent cell written by the user, which every
estimator of the library runs on, through the same C++ code as the built-in cells.

UORO needs three things from a recurrent model (the paper's "black-box" use): its
transition ``s' = F(x, s, θ)``, a tangent-forward product along the state, and a
vector–Jacobian product. A cell object gives them as functions on NumPy arrays::

    class MyCell:
        input_size = 3
        state_size = 8
        hidden_size = 8            # optional: the readout sees state[:hidden_size]
        batched = False            # optional: True if the functions take (B, ...) arrays
        initial_parameters = np.zeros(40)   # or a dict {name: array}

        def forward(self, x, s, theta):           # -> s_next (state_size,)
        def jvp_state(self, x, s, theta, s_dot):  # -> (∂F/∂s) s_dot; optional
        def vjp(self, x, s, theta, c):            # -> (cᵀ ∂F/∂s, cᵀ ∂F/∂θ)

and ``uoro.Learner(cell=MyCell(), ...)`` learns with it. See the "Bring your own model"
page of the documentation for what is exact, what is approximate, and the cost.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Algorithms whose estimate uses the tangent ``jvp_state`` (UORO's forward
#: propagation, RTRL's and the Kronecker estimators' state Jacobian); truncated BPTT
#: needs only ``vjp``.
TANGENT_ALGORITHMS = ("uoro", "rtrl", "kf_rtrl", "ok")


@runtime_checkable
class Cell(Protocol):
    """A recurrent transition ``s' = F(x, s, θ)`` the user supplies.

    Required members:

    - ``input_size``, ``state_size``: sizes of ``x`` and ``s``.
    - ``initial_parameters``: θ to start from, a 1-D float array or a mapping from names
      to float arrays (then ``theta`` reaches the functions as a dict of arrays of those
      shapes, and ``vjp`` may return ``c_theta`` as such a dict).
    - ``forward(x, s, theta) -> s_next``.
    - ``vjp(x, s, theta, c) -> (c_s, c_theta)``: ``cᵀ ∂F/∂s`` (shape of ``s``) and
      ``cᵀ ∂F/∂θ`` (shape of θ). Required because every estimator needs the
      parameter-side product ``cᵀ ∂F/∂θ`` and a finite difference cannot give it at
      the cost of one call (it would take one call per parameter).

    Optional members:

    - ``jvp_state(x, s, theta, s_dot) -> (∂F/∂s) s_dot``. Without it the tangent is the
      finite difference ``(F(x, s + ε s̃) − F(x, s)) / ε`` (the paper's eq. 17), which
      makes UORO and RTRL approximate (the learner warns once).
    - ``hidden_size`` (default ``state_size``): the readout sees ``s[:hidden_size]``.
    - ``batched`` (default False): the functions take a leading stream axis, ``x`` of
      shape ``(B, input_size)``, ``s`` and ``c`` of shape ``(B, state_size)``, and
      return ``(B, ...)`` arrays (``c_theta`` per stream: ``(B, n_params)``). A learner
      with ``streams=B`` then calls each function once per tick instead of once per
      stream; a single-stream learner calls it with ``B = 1``.

    The arrays passed in are fresh copies in the learner's dtype, except ``theta``: a
    read-only view of the learner's parameters, valid during the call (copy it to keep
    it). Functions return NumPy float arrays (float32 or float64; converted to the
    learner's dtype); a wrong shape, dtype or a NaN/inf raises an error naming the
    function, and an exception raised inside a function propagates unchanged. Either
    way the step that called it changes nothing in the learner.
    """

    input_size: int
    state_size: int

    @property
    def initial_parameters(self) -> Any: ...

    def forward(self, x: np.ndarray, s: np.ndarray, theta: Any) -> np.ndarray: ...

    def vjp(
        self, x: np.ndarray, s: np.ndarray, theta: Any, c: np.ndarray
    ) -> tuple[np.ndarray, Any]: ...


@dataclass
class Functions:
    """What the core calls: a cell's functions on flat parameter vectors (named
    parameters unpacked and packed around the user's functions), with its sizes."""

    name: str
    state_size: int
    param_size: int
    forward: Callable[..., Any]
    jvp_state: Callable[..., Any] | None
    vjp: Callable[..., Any]
    batched: bool


@dataclass
class Description:
    """A user cell, checked: its functions, sizes, parameter layout and initial θ."""

    functions: Functions
    input_size: int
    hidden_size: int
    initial: np.ndarray
    names: list[tuple[str, tuple[int, ...]]] | None = None  # None: one flat vector
    layout: dict[str, Any] = field(default_factory=dict)


def describe(cell: Any) -> Description:
    """Checks a user cell against the protocol and returns what the learner needs;
    raises TypeError / ValueError naming what is wrong."""
    name = type(cell).__name__
    sizes = {}
    for attribute in ("input_size", "state_size"):
        sizes[attribute] = _size(name, attribute, getattr(cell, attribute, None))
    hidden = getattr(cell, "hidden_size", None)
    hidden_size = sizes["state_size"] if hidden is None else _size(name, "hidden_size", hidden)
    if hidden_size > sizes["state_size"]:
        raise ValueError(
            f"{name}.hidden_size must be <= state_size ({sizes['state_size']}); got {hidden_size}"
        )
    for required in ("forward", "vjp"):
        if not callable(getattr(cell, required, None)):
            raise TypeError(f"{name} must have a method {required}(...); see uoro.cells.Cell")
    jvp = getattr(cell, "jvp_state", None)
    if jvp is not None and not callable(jvp):
        raise TypeError(f"{name}.jvp_state must be a method or None")
    batched = getattr(cell, "batched", False)
    if not isinstance(batched, (bool, np.bool_)):
        raise TypeError(f"{name}.batched must be True or False; got {batched!r}")
    if not hasattr(cell, "initial_parameters"):
        raise TypeError(f"{name} must have initial_parameters (an array or a dict of arrays)")
    initial, names = _flatten_initial(name, cell.initial_parameters)
    forward, vjp_fn = cell.forward, cell.vjp
    if names is not None:
        forward, jvp, vjp_fn = _named(name, names, forward, jvp, vjp_fn, bool(batched))
    functions = Functions(
        name=name,
        state_size=sizes["state_size"],
        param_size=initial.size,
        forward=forward,
        jvp_state=jvp,
        vjp=vjp_fn,
        batched=bool(batched),
    )
    layout = {
        "input_size": sizes["input_size"],
        "state_size": sizes["state_size"],
        "hidden_size": hidden_size,
        "n_params": int(initial.size),
        "parameters": None if names is None else [[n, list(shape)] for n, shape in names],
    }
    return Description(functions, sizes["input_size"], hidden_size, initial, names, layout)


def warn_finite_difference(description: Description, algorithm: str) -> None:
    """Warns (once per learner) that the tangent is a finite difference."""
    if description.functions.jvp_state is None and algorithm in TANGENT_ALGORITHMS:
        warnings.warn(
            f"{description.functions.name} has no jvp_state: the tangent (∂F/∂s) s̃ is taken as "
            f"a finite difference of forward, so the {algorithm!r} gradient is approximate "
            "(give jvp_state for the exact one)",
            UserWarning,
            stacklevel=3,
        )


def unflatten(flat: np.ndarray, names: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """The named parameters as views of a flat vector (C order, in the names' order)."""
    out, offset = {}, 0
    for name, shape in names:
        size = math.prod(shape)
        out[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return out


def _cached_unflatten(
    names: list[tuple[str, tuple[int, ...]]],
) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """`unflatten` for the calls of a learner's steps: the core passes the same read-only
    view of θ to every call, so its named views are made once (each call still gets a
    dict of its own)."""
    last: list[Any] = [None, {}]  # the flat vector (kept alive, so `is` is safe), its views

    def views(flat: np.ndarray) -> dict[str, np.ndarray]:
        if flat is not last[0]:
            last[0], last[1] = flat, unflatten(flat, names)
        return dict(last[1])

    return views


def _size(cell: str, attribute: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{cell}.{attribute} must be an integer >= 1; got {value!r}")
    return int(value)


def _float_values(where: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu" or array.dtype.kind == "b":
        raise TypeError(f"{where} must hold real numbers; got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{where} contains NaN or inf")
    return array


def _flatten_initial(
    cell: str, value: Any
) -> tuple[np.ndarray, list[tuple[str, tuple[int, ...]]] | None]:
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{cell}.initial_parameters must not be empty")
        names, parts = [], []
        for key, array in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{cell}.initial_parameters keys must be strings; got {key!r}")
            values = _float_values(f"{cell}.initial_parameters[{key!r}]", array)
            names.append((key, tuple(int(d) for d in values.shape)))
            parts.append(values.reshape(-1))
        flat = np.concatenate(parts)
        if flat.size == 0:
            raise ValueError(f"{cell}.initial_parameters holds no values")
        return flat, names
    flat = _float_values(f"{cell}.initial_parameters", value)
    if flat.ndim != 1 or flat.size == 0:
        raise ValueError(
            f"{cell}.initial_parameters must be a non-empty 1-D array or a dict of arrays; "
            f"got shape {flat.shape}"
        )
    return flat, None


def _named(
    cell: str,
    names: list[tuple[str, tuple[int, ...]]],
    forward: Callable[..., Any],
    jvp: Callable[..., Any] | None,
    vjp: Callable[..., Any],
    batched: bool,
) -> tuple[Callable[..., Any], Callable[..., Any] | None, Callable[..., Any]]:
    """The user's functions on named parameters, as functions of a flat θ."""
    keys = [n for n, _ in names]
    unflatten_theta = _cached_unflatten(names)

    def packed(c_theta: Any) -> Any:
        if not isinstance(c_theta, Mapping):
            return c_theta  # flat already: the core checks its shape
        if sorted(c_theta) != sorted(keys):
            raise ValueError(
                f"{cell}.vjp (c_theta) must have the keys {keys}; got {sorted(c_theta)}"
            )
        parts = []
        for key, shape in names:
            part = np.asarray(c_theta[key])
            expected = ((part.shape[0],) if batched and part.ndim else ()) + shape
            if part.shape != expected:
                raise ValueError(
                    f"{cell}.vjp (c_theta[{key!r}]) returned shape {part.shape}, expected "
                    f"{expected}"
                )
            parts.append(part.reshape(part.shape[0], -1) if batched else part.reshape(-1))
        return np.concatenate(parts, axis=-1)

    def named_forward(x: np.ndarray, s: np.ndarray, theta: np.ndarray) -> Any:
        return forward(x, s, unflatten_theta(theta))

    def named_vjp(x: np.ndarray, s: np.ndarray, theta: np.ndarray, c: np.ndarray) -> Any:
        result = vjp(x, s, unflatten_theta(theta), c)
        if not isinstance(result, tuple) or len(result) != 2:
            return result  # the core names the mistake
        return result[0], packed(result[1])

    named_jvp = None
    if jvp is not None:
        user_jvp = jvp

        def named_jvp(x: np.ndarray, s: np.ndarray, theta: np.ndarray, s_dot: np.ndarray) -> Any:
            return user_jvp(x, s, unflatten_theta(theta), s_dot)

    return named_forward, named_jvp, named_vjp


def from_torch(*args: Any, **kwargs: Any) -> Any:
    """A `Cell` from a ``torch.nn.Module`` mapping ``(x, s) -> s'`` (needs the optional
    ``torch`` extra); see `uoro.torch_cells.TorchCell`."""
    try:
        from uoro.torch_cells import TorchCell
    except ImportError as error:
        raise ImportError(
            'uoro.cells.from_torch needs PyTorch: pip install "uoro[torch]" '
            f"(or install torch yourself); importing it failed: {error}"
        ) from None
    return TorchCell(*args, **kwargs)
