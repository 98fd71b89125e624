"""Streaming synthetic and text datasets for online next-character prediction.

These reproduce the data of Tallec & Ollivier (2017), "Unbiased Online Recurrent
Optimization", Section 4 (Fig. 2): the *distant brackets* and *a^n b^n* datasets, plus a
character stream read from a user-supplied text file.

Those generators return a :class:`TokenStream`: an endless iterator of integer token ids
with a :class:`Vocabulary`, bulk access via :meth:`TokenStream.take` and next-token
prediction pairs via :meth:`TokenStream.pairs`. :func:`delayed_recall`, a long-range
memory task out of reach of truncated BPTT, returns a :class:`DelayedRecallStream` of
``(input, target)`` pairs instead. Streams are deterministic for a given seed and
independent of how reads are chunked.
"""

from __future__ import annotations

import math
import operator
import os
import string
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "AnbnStream",
    "DelayedRecallStream",
    "DistantBracketsStream",
    "TokenStream",
    "Vocabulary",
    "anbn",
    "delayed_recall",
    "distant_brackets",
    "text_stream",
]

_EMPTY = np.empty(0, dtype=np.int64)


class Vocabulary:
    """Immutable bijection between single-character symbols and ids ``0..len-1``.

    The id of a symbol is its position in ``symbols``.
    """

    __slots__ = ("_code_to_id", "_ids", "_symbols")

    def __init__(self, symbols: Sequence[str]) -> None:
        symbols = tuple(symbols)
        if not symbols:
            raise ValueError("vocabulary must contain at least one symbol, got none")
        for symbol in symbols:
            if not isinstance(symbol, str) or len(symbol) != 1:
                raise ValueError(f"vocabulary symbols must be single characters, got {symbol!r}")
        ids: dict[str, int] = {}
        for position, symbol in enumerate(symbols):
            if symbol in ids:
                raise ValueError(
                    f"duplicate symbol {symbol!r} in vocabulary "
                    f"(positions {ids[symbol]} and {position})"
                )
            ids[symbol] = position
        # Lookup table from Unicode code point to id (-1 = unknown) makes encode() vectorized.
        code_to_id = np.full(max(map(ord, symbols)) + 1, -1, dtype=np.int64)
        code_to_id[[ord(symbol) for symbol in symbols]] = np.arange(len(symbols))
        self._symbols = symbols
        self._ids = ids
        self._code_to_id = code_to_id

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols, in id order."""
        return self._symbols

    def __len__(self) -> int:
        return len(self._symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._ids

    def index(self, symbol: str) -> int:
        """Return the id of ``symbol``; ValueError if it is not in the vocabulary."""
        try:
            return self._ids[symbol]
        except KeyError:
            raise ValueError(f"symbol {symbol!r} is not in the vocabulary") from None

    def encode(self, text: str) -> np.ndarray:
        """Return the ids of the characters of ``text`` as an int64 array.

        Raises ValueError naming the first unknown character and its position.
        """
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.full(codes.shape, -1, dtype=np.int64)
        in_table = codes < len(self._code_to_id)
        ids[in_table] = self._code_to_id[codes[in_table]]
        unknown = np.flatnonzero(ids < 0)
        if unknown.size:
            position = int(unknown[0])
            raise ValueError(
                f"character {text[position]!r} at position {position} is not in the vocabulary"
            )
        return ids

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Return the string spelled by a 1-D sequence of ids.

        Raises IndexError naming the first id outside ``[0, len - 1]``.
        """
        array = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        if array.size == 0:
            return ""
        if array.ndim != 1:
            raise ValueError(f"ids must be one-dimensional, got shape {array.shape}")
        if array.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {array.dtype}")
        out_of_range = np.flatnonzero((array < 0) | (array >= len(self._symbols)))
        if out_of_range.size:
            bad = int(array[out_of_range[0]])
            raise IndexError(f"id {bad} is out of range; valid ids are 0..{len(self._symbols) - 1}")
        return "".join(self._symbols[i] for i in array.tolist())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self._symbols == other._symbols

    def __hash__(self) -> int:
        return hash(self._symbols)

    def __repr__(self) -> str:
        return f"Vocabulary({''.join(self._symbols)!r})"


class TokenStream:
    """Iterator of int token ids produced chunk by chunk by ``chunks``.

    ``chunks`` yields int64 arrays (e.g. batches of whole lines); the stream is their
    concatenation. It ends only when ``chunks`` is exhausted. Because chunk boundaries are
    fixed by the generator, reads return the same tokens however they are split.
    """

    def __init__(self, vocabulary: Vocabulary, chunks: Iterator[np.ndarray]) -> None:
        self.vocabulary = vocabulary
        self._chunks = chunks
        self._buffer = _EMPTY
        self._position = 0  # index in _buffer of the next unread token

    def __iter__(self) -> TokenStream:
        return self

    def __next__(self) -> int:
        if self._position >= len(self._buffer) and not self._fill(1):
            raise StopIteration
        token = int(self._buffer[self._position])
        self._position += 1
        return token

    def _fill(self, n: int) -> bool:
        """Buffer at least ``n`` unread tokens; False if the stream ends first."""
        available = len(self._buffer) - self._position
        if available >= n:
            return True
        pieces = [self._buffer[self._position :]]
        for chunk in self._chunks:
            pieces.append(chunk)
            available += len(chunk)
            if available >= n:
                break
        self._buffer = np.concatenate(pieces)
        self._position = 0
        return available >= n

    def take(self, n: int) -> np.ndarray:
        """Consume and return the next ``n`` tokens (fewer only if a finite stream ends)."""
        n = _check_at_least("n", n, 0)
        self._fill(n)
        tokens = self._buffer[self._position : self._position + n].copy()
        self._position += len(tokens)
        return tokens

    def pairs(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(xs, ys)`` with ``ys[i]`` the token following ``xs[i]``.

        Consumes ``n`` tokens: ``xs`` are tokens ``t..t+n-1`` and ``ys`` are ``t+1..t+n``, so
        the last ``y`` of one call is the first ``x`` of the next. If a finite stream ends,
        fewer pairs are returned.
        """
        n = _check_at_least("n", n, 0)
        self._fill(n + 1)
        window = self._buffer[self._position : self._position + n + 1]
        count = max(len(window) - 1, 0)
        self._position += count
        return window[:count].copy(), window[1 : count + 1].copy()


class DistantBracketsStream(TokenStream):
    """Stream of the paper's distant-brackets dataset; see :func:`distant_brackets`."""

    def __init__(self, s: int, k: int, a: int, seed: int) -> None:
        self.s, self.k, self.a, self.seed = s, k, a, seed
        vocabulary = Vocabulary([*string.ascii_lowercase[:a], "[", "]", "\n"])
        make_lines = self._lines_maker(np.random.default_rng(seed))
        super().__init__(vocabulary, _repeat_forever(make_lines))

    def _lines_maker(self, rng: np.random.Generator) -> Callable[[], np.ndarray]:
        s, k, a = self.s, self.k, self.a
        left, right, newline = a, a + 1, a + 2
        line_length = 2 * s + k + 5
        lines_per_chunk = max(1, 4096 // line_length)

        def make_lines() -> np.ndarray:
            letters = rng.integers(0, a, size=(lines_per_chunk, s + k), dtype=np.int64)
            repeated, middle = letters[:, :s], letters[:, s:]
            lines = np.empty((lines_per_chunk, line_length), dtype=np.int64)
            lines[:, 0] = left
            lines[:, 1 : s + 1] = repeated
            lines[:, s + 1] = right
            lines[:, s + 2 : s + 2 + k] = middle
            lines[:, s + 2 + k] = left
            lines[:, s + 3 + k : 2 * s + 3 + k] = repeated
            lines[:, 2 * s + 3 + k] = right
            lines[:, 2 * s + 4 + k] = newline
            return lines.ravel()

        return make_lines

    def entropy_rate_bits(self) -> float:
        """Optimal bits per character for a model that knows the structure.

        Only the ``s + k`` fresh letters of each line are random (``log2(a)`` bits each);
        everything else, including the repeated letters, is determined. A line has
        ``2s + k + 5`` characters.
        """
        return (self.s + self.k) * math.log2(self.a) / (2 * self.s + self.k + 5)

    def __repr__(self) -> str:
        return f"distant_brackets(s={self.s}, k={self.k}, a={self.a}, seed={self.seed})"


class AnbnStream(TokenStream):
    """Stream of the paper's a^n b^n dataset; see :func:`anbn`."""

    LINES_PER_CHUNK = 128

    def __init__(self, k: int, l: int, seed: int) -> None:  # noqa: E741 (paper's notation)
        self.k, self.l, self.seed = k, l, seed
        make_lines = self._lines_maker(np.random.default_rng(seed))
        super().__init__(Vocabulary("ab\n"), _repeat_forever(make_lines))

    def _lines_maker(self, rng: np.random.Generator) -> Callable[[], np.ndarray]:
        lines = self.LINES_PER_CHUNK
        # Per line: n times 'a' (0), one '\n' (2), n times 'b' (1), one '\n' (2).
        run_symbols = np.tile(np.array([0, 2, 1, 2], dtype=np.int64), lines)

        def make_lines() -> np.ndarray:
            n = rng.integers(self.k, self.l + 1, size=lines, dtype=np.int64)
            ones = np.ones_like(n)
            return np.repeat(run_symbols, np.stack([n, ones, n, ones], axis=1).ravel())

        return make_lines

    def _mean_line_length(self) -> float:
        return self.k + self.l + 2  # E[2n + 2] for n uniform on k..l

    def entropy_rate_bits(self) -> float:
        """Optimal bits per character for a model that knows the structure.

        The only uncertainty is ``n`` (``log2(l - k + 1)`` bits per line, spread over the
        a-run's end); the b-run is then determined. Rate = ``log2(l-k+1) / E[2n+2]``, about
        0.14 for the paper's ``anbn(1, 32)``.
        """
        return math.log2(self.l - self.k + 1) / self._mean_line_length()

    def memoryless_entropy_bits(self) -> float:
        """Bits per character of a model unaware that the a- and b-counts match.

        Follows the paper's approximation that the b-run is then as uncertain as the a-run:
        ``2 log2(l - k + 1) / E[2n+2]``, about 0.28 for ``anbn(1, 32)``.
        """
        return 2 * self.entropy_rate_bits()

    def __repr__(self) -> str:
        return f"anbn(k={self.k}, l={self.l}, seed={self.seed})"


class DelayedRecallStream:
    """Stream of the delayed-recall task; see :func:`delayed_recall`.

    Unlike the character streams it yields aligned ``(input, target)`` pairs, not a
    single token sequence: :meth:`take` returns both. Ids:

    - inputs (``input_size = 2 * symbols + 2``): ``0..symbols-1`` the plain content
      symbols (distractors), :attr:`blank` ``= symbols``, :attr:`query`
      ``= symbols + 1``, then the marked symbols: symbol ``s`` to remember is
      :attr:`marked` ``+ s``, ``marked = symbols + 2``;
    - targets (``output_size = symbols + 1``): ``0..symbols-1`` the recalled symbol (at
      query steps only), :attr:`blank` ``= symbols`` everywhere else.

    A content symbol and the blank have the same id as input and as target.
    """

    EPISODES_PER_CHUNK = 64

    def __init__(
        self, symbols: int, delay: int, jitter: int, seed: int, distractors: float
    ) -> None:
        self.symbols, self.delay, self.jitter = symbols, delay, jitter
        self.seed, self.distractors = seed, distractors
        self.blank, self.query, self.marked = symbols, symbols + 1, symbols + 2
        self.input_size = 2 * symbols + 2
        self.output_size = symbols + 1
        self._rng = np.random.default_rng(seed)
        self._xs = self._ys = _EMPTY
        self._position = 0  # index in _xs / _ys of the next unread pair

    def take(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Consume and return the next ``n`` pairs as ``(xs, ys)``, two int64 arrays.

        ``ys[i]`` is the target of the step that reads ``xs[i]``. The stream is endless,
        and the same however the reads are split.
        """
        n = _check_at_least("n", n, 0)
        if len(self._xs) - self._position < n:
            xs_pieces, ys_pieces = [self._xs[self._position :]], [self._ys[self._position :]]
            available = len(xs_pieces[0])
            while available < n:
                xs, ys = self._episodes()
                xs_pieces.append(xs)
                ys_pieces.append(ys)
                available += len(xs)
            self._xs, self._ys = np.concatenate(xs_pieces), np.concatenate(ys_pieces)
            self._position = 0
        end = self._position + n
        xs, ys = self._xs[self._position : end].copy(), self._ys[self._position : end].copy()
        self._position = end
        return xs, ys

    def _episodes(self) -> tuple[np.ndarray, np.ndarray]:
        """A fixed number of whole episodes; the draws depend on nothing but the seed."""
        rng, count = self._rng, self.EPISODES_PER_CHUNK
        lead = rng.integers(0, self.jitter + 1, size=count)  # fillers before the marked symbol
        gap = self.delay + rng.integers(0, self.jitter + 1, size=count)  # marked to query
        remembered = rng.integers(0, self.symbols, size=count)
        lengths = lead + gap + 1
        total = int(lengths.sum())
        noise = rng.integers(0, self.symbols, size=total)
        shown = rng.random(total) < self.distractors
        xs = np.where(shown, noise, self.blank).astype(np.int64)
        ys = np.full(total, self.blank, dtype=np.int64)
        marks = np.cumsum(lengths) - lengths + lead
        xs[marks] = self.marked + remembered
        xs[marks + gap] = self.query
        ys[marks + gap] = remembered
        return xs, ys

    def query_mask(self, xs: np.ndarray) -> np.ndarray:
        """Boolean mask of the query steps of the inputs ``xs`` (any shape): the only
        steps whose target is not :attr:`blank`, and the only ones needing memory."""
        return np.asarray(xs) == self.query

    def marked_mask(self, xs: np.ndarray) -> np.ndarray:
        """Boolean mask of the marked symbols of the inputs ``xs`` (any shape): the
        symbols to remember, one per episode (the symbol is ``xs - marked`` there)."""
        return np.asarray(xs) >= self.marked

    def mean_episode_length(self) -> float:
        """Mean steps per episode: ``E[lead] + E[gap] + 1 = delay + jitter + 1``."""
        return self.delay + self.jitter + 1

    def memoryless_loss(self) -> float:
        """Nats per step of the best model that does not remember the marked symbol.

        Every target but the query's is :attr:`blank` and predictable from the current
        input alone (loss 0); at a query such a model can only spread its bet over the
        ``symbols`` (loss ``ln(symbols)``). A model that remembers reaches 0.
        """
        return math.log(self.symbols) / self.mean_episode_length()

    def __repr__(self) -> str:
        return (
            f"delayed_recall(symbols={self.symbols}, delay={self.delay}, jitter={self.jitter}, "
            f"seed={self.seed}, distractors={self.distractors})"
        )


def distant_brackets(s: int = 1, k: int = 5, a: int = 10, seed: int = 0) -> DistantBracketsStream:
    """The paper's distant-brackets dataset.

    Each line is ``[`` + S + ``]`` + K + ``[`` + S + ``]`` + newline, where S is ``s`` and K
    is ``k`` letters drawn uniformly and independently from the first ``a`` lowercase letters,
    e.g. ``[a]eecbe[a]`` for ``(s, k, a) = (1, 5, 10)``. Vocabulary: the ``a`` letters, then
    ``[``, ``]``, newline.
    """
    s = _check_at_least("s", s, 1)
    k = _check_at_least("k", k, 0)
    a = _check_in_range("a", a, 1, len(string.ascii_lowercase))
    return DistantBracketsStream(s, k, a, seed)


def anbn(k: int = 1, l: int = 32, seed: int = 0) -> AnbnStream:  # noqa: E741 (paper's notation)
    """The paper's a^n b^n dataset.

    Each line pair is ``n`` a's, newline, ``n`` b's, newline, with ``n`` uniform on
    ``k..l`` (inclusive). Vocabulary: ``a``, ``b``, newline.
    """
    k = _check_at_least("k", k, 0)
    l = _check_at_least("l", l, 0)  # noqa: E741
    if k > l:
        raise ValueError(f"k must be <= l, got k={k} and l={l}")
    return AnbnStream(k, l, seed)


def delayed_recall(
    symbols: int = 8,
    delay: int = 100,
    jitter: int = 20,
    seed: int = 0,
    *,
    distractors: float = 0.5,
) -> DelayedRecallStream:
    """A long-range memory task: at a QUERY, recall the marked symbol seen at least
    ``delay`` steps before.

    The stream is an endless sequence of episodes, each laid out as (input → target):

    - ``U{0..jitter}`` filler steps → blank;
    - the symbol to remember, uniform on ``0..symbols-1``, as its *marked* token →
      blank;
    - ``gap - 1`` filler steps → blank;
    - QUERY → the remembered symbol;

    with ``gap = delay + U{0..jitter}`` the distance from the marked symbol to the QUERY.
    A filler input is a plain (unmarked) content symbol, uniform on ``0..symbols-1``,
    with probability ``distractors`` (a distractor: a model cannot just keep the last
    symbol it saw) and the blank token otherwise. The symbol to remember and its mark
    come in one token, so a model can tell from the current input alone that this
    symbol is the one to store; what it must learn is to store it and keep it, through
    the distractors, until the QUERY.

    Ids: inputs ``0..symbols-1`` are the plain content symbols, ``symbols`` the blank
    token, ``symbols + 1`` QUERY and ``symbols + 2 + s`` the marked symbol ``s``
    (``input_size = 2 * symbols + 2``); targets ``0..symbols-1`` are the symbols and
    ``symbols`` the blank class (``output_size = symbols + 1``), so a symbol and the
    blank have the same id as input and as target. The stream's attributes ``blank``,
    ``query``, ``marked`` (the first marked id), ``input_size`` and ``output_size`` hold
    them; ``query_mask(xs)`` marks the query steps, e.g. to score recall, and
    ``marked_mask(xs)`` the marked symbols.

    Every target but the query's is blank and needs no memory, so a perfect model has
    loss 0 everywhere, and one that does not remember the symbol loses ``ln(symbols)``
    nats at each query (``memoryless_loss()`` per step) and recalls at chance,
    ``1/symbols``. The only signal that teaches a model to *store* the marked symbol is
    the query's loss at least ``delay`` steps later: truncated BPTT with a window
    shorter than that never sees it; exact online gradients (RTRL) carry it, and so do
    unbiased estimates of them (UORO), in expectation.

    Args:
        symbols: number of content symbols (>= 2); chance-level recall is ``1/symbols``.
        delay: least number of steps from a marked symbol to its QUERY (>= 1).
        jitter: the marked-symbol-to-QUERY distance is ``delay + U{0..jitter}``, and
            each episode starts with ``U{0..jitter}`` filler steps (>= 0; with
            ``jitter > 0`` neither the query's nor the next marked symbol's time can be
            counted off).
        seed: seeds every draw; a seed gives the same stream however it is read.
        distractors: probability that a filler step shows a plain content symbol
            rather than the blank token, in [0, 1].
    """
    symbols = _check_at_least("symbols", symbols, 2)
    delay = _check_at_least("delay", delay, 1)
    jitter = _check_at_least("jitter", jitter, 0)
    distractors = _check_probability("distractors", distractors)
    return DelayedRecallStream(symbols, delay, jitter, seed, distractors)


def text_stream(
    path_or_text: str | os.PathLike[str],
    *,
    vocabulary: Vocabulary | None = None,
    loop: bool = True,
) -> TokenStream:
    """Character stream of the UTF-8 text file at ``path_or_text`` (a path, never literal text).

    The vocabulary defaults to the sorted set of the file's characters. With ``loop=True``
    the text repeats endlessly; with ``loop=False`` the stream ends after one pass.
    Raises ValueError for an empty file or a character missing from ``vocabulary``.
    """
    path = Path(path_or_text)
    text = path.read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"text file {str(path)!r} is empty")
    if vocabulary is None:
        vocabulary = Vocabulary(sorted(set(text)))
    try:
        tokens = vocabulary.encode(text)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    tokens.flags.writeable = False  # shared by every repetition
    chunks = _repeat_forever(lambda: tokens) if loop else iter((tokens,))
    return TokenStream(vocabulary, chunks)


def _repeat_forever(make_chunk: Callable[[], np.ndarray]) -> Iterator[np.ndarray]:
    while True:
        yield make_chunk()


def _check_in_range(name: str, value: int, low: int, high: int | None) -> int:
    value = operator.index(value)  # rejects floats and other non-integers with TypeError
    if value < low or (high is not None and value > high):
        expected = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {expected}, got {value}")
    return value


def _check_at_least(name: str, value: int, low: int) -> int:
    return _check_in_range(name, value, low, None)


def _check_probability(name: str, value: float) -> float:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if not 0 <= number <= 1:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number
