from __future__ import annotations

import collections
import math
import re
import string

import numpy as np
import pytest

from uoro.datasets import Vocabulary, anbn, delayed_recall, distant_brackets, text_stream


def decoded_lines(stream, n_chars: int) -> list[str]:
    """Complete lines (with their newline) among the next ``n_chars`` characters."""
    text = stream.vocabulary.decode(stream.take(n_chars))
    return text.splitlines(keepends=True)[:-1]  # the last line may be cut


# --- Vocabulary ---------------------------------------------------------------------------


def test_vocabulary_round_trip_and_accessors():
    vocabulary = Vocabulary("ba\n[")
    ids = vocabulary.encode("ab[\nab")
    assert ids.dtype == np.int64
    assert ids.tolist() == [1, 0, 3, 2, 1, 0]
    assert vocabulary.decode(ids) == "ab[\nab"
    assert vocabulary.decode([]) == ""
    assert vocabulary.encode("").tolist() == []
    assert len(vocabulary) == 4
    assert vocabulary.symbols == ("b", "a", "\n", "[")
    assert vocabulary.index("[") == 3
    assert "a" in vocabulary and "z" not in vocabulary
    assert vocabulary == Vocabulary(["b", "a", "\n", "["])
    assert vocabulary != Vocabulary("ab\n[")
    assert hash(vocabulary) == hash(Vocabulary("ba\n["))
    assert eval(repr(vocabulary)) == vocabulary


def test_vocabulary_construction_errors():
    with pytest.raises(ValueError, match="at least one symbol"):
        Vocabulary([])
    with pytest.raises(ValueError, match=r"duplicate symbol 'a'.*positions 0 and 2"):
        Vocabulary("aba")
    with pytest.raises(ValueError, match="single characters, got 'ab'"):
        Vocabulary(["ab", "c"])


def test_vocabulary_encode_decode_errors():
    vocabulary = Vocabulary("abc")
    with pytest.raises(ValueError, match="character 'z' at position 3"):
        vocabulary.encode("abcz")
    with pytest.raises(ValueError, match="character 'é' at position 0"):
        vocabulary.encode("é")
    with pytest.raises(IndexError, match=r"id 3 is out of range; valid ids are 0\.\.2"):
        vocabulary.decode([0, 3])
    with pytest.raises(IndexError, match="id -1"):
        vocabulary.decode(np.array([-1]))
    with pytest.raises(ValueError, match="symbol 'z' is not in the vocabulary"):
        vocabulary.index("z")


# --- distant brackets ---------------------------------------------------------------------


@pytest.mark.parametrize(("s", "k", "a"), [(1, 5, 10), (3, 0, 2), (2, 7, 26)])
def test_distant_brackets_line_format(s, k, a):
    stream = distant_brackets(s=s, k=k, a=a, seed=1)
    letters = string.ascii_lowercase[:a]
    assert stream.vocabulary.symbols == (*letters, "[", "]", "\n")
    line = re.compile(rf"\[([{letters}]{{{s}}})\][{letters}]{{{k}}}\[([{letters}]{{{s}}})\]\n")
    lines = decoded_lines(stream, 2000 * (2 * s + k + 5))
    assert len(lines) == 1999
    for text in lines:
        match = line.fullmatch(text)
        assert match, text
        assert match[1] == match[2]


def test_distant_brackets_paper_example_shape():
    first = decoded_lines(distant_brackets(), 200)[0]
    assert re.fullmatch(r"\[[a-j]\][a-j]{5}\[[a-j]\]\n", first)


def test_distant_brackets_letters_uniform():
    a = 10
    stream = distant_brackets(s=1, k=5, a=a, seed=3)
    tokens = stream.take(4000 * 12)  # 4000 lines, 6 fresh letters each: 24k letters
    fresh = tokens.reshape(-1, 12)[:, [1, 3, 4, 5, 6, 7]].ravel()
    counts = np.bincount(fresh, minlength=a + 3)
    assert counts[a:].sum() == 0  # only letters in fresh positions
    frequencies = counts[:a] / fresh.size
    assert np.all(np.abs(frequencies - 1 / a) < 0.2 / a), frequencies


def test_distant_brackets_entropy_rate():
    assert distant_brackets(1, 5, 10).entropy_rate_bits() == pytest.approx(6 * math.log2(10) / 12)
    assert distant_brackets(2, 3, 4).entropy_rate_bits() == pytest.approx(5 * 2 / 12)
    assert distant_brackets(1, 0, 1).entropy_rate_bits() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"s": 0}, r"s must be >= 1, got 0"),
        ({"k": -1}, r"k must be >= 0, got -1"),
        ({"a": 0}, r"a must be in \[1, 26\], got 0"),
        ({"a": 27}, r"a must be in \[1, 26\], got 27"),
    ],
)
def test_distant_brackets_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distant_brackets(**kwargs)


# --- a^n b^n ------------------------------------------------------------------------------


def test_anbn_line_format_and_n_distribution():
    k, l = 3, 12  # noqa: E741
    stream = anbn(k=k, l=l, seed=5)
    assert stream.vocabulary.symbols == ("a", "b", "\n")
    text = stream.vocabulary.decode(stream.take(60_000))
    pairs = re.findall(r"(a*)\n(b*)\n", text)
    complete = "".join(a + "\n" + b + "\n" for a, b in pairs)
    assert text.startswith(complete) and len(text) - len(complete) < 2 * l + 2
    assert len(pairs) > 3000
    for a_run, b_run in pairs:
        assert len(a_run) == len(b_run)
    n_counts = collections.Counter(len(a_run) for a_run, _ in pairs)
    assert set(n_counts) == set(range(k, l + 1))
    expected = len(pairs) / (l - k + 1)
    assert all(abs(count - expected) < 0.25 * expected for count in n_counts.values())


def test_anbn_entropy_rates_match_paper():
    stream = anbn(1, 32)
    assert stream.entropy_rate_bits() == pytest.approx(5 / 35)
    assert stream.entropy_rate_bits() == pytest.approx(0.1429, abs=1e-4)
    assert stream.memoryless_entropy_bits() == pytest.approx(0.2857, abs=1e-4)
    assert anbn(4, 4).entropy_rate_bits() == 0.0


def test_anbn_entropy_rate_matches_empirical_line_length():
    k, l = 2, 9  # noqa: E741
    tokens = anbn(k, l, seed=11).take(200_000)
    newlines = np.count_nonzero(tokens == 2)
    empirical_rate = math.log2(l - k + 1) * (newlines / 2) / tokens.size
    assert anbn(k, l).entropy_rate_bits() == pytest.approx(empirical_rate, rel=0.02)


def test_anbn_validation():
    with pytest.raises(ValueError, match=r"k must be <= l, got k=5 and l=3"):
        anbn(k=5, l=3)
    with pytest.raises(ValueError, match=r"k must be >= 0, got -2"):
        anbn(k=-2)
    with pytest.raises(TypeError):
        anbn(k=1.5)


# --- delayed recall -----------------------------------------------------------------------


def episodes(xs, stream):
    """(marked, query, remembered) of every complete episode in xs."""
    marked = np.flatnonzero(stream.marked_mask(xs))
    queries = np.flatnonzero(stream.query_mask(xs))
    if queries.size and marked.size and queries[0] < marked[0]:
        queries = queries[1:]  # cannot happen from a stream's start; kept for slices
    marked = marked[: queries.size]
    return marked, queries, xs[marked] - stream.marked


def test_delayed_recall_ids_and_sizes():
    stream = delayed_recall(symbols=5, delay=10, jitter=3)
    assert (stream.blank, stream.query, stream.marked) == (5, 6, 7)
    assert (stream.input_size, stream.output_size) == (12, 6)
    xs, ys = stream.take(5_000)
    assert xs.dtype == ys.dtype == np.int64 and xs.shape == ys.shape == (5_000,)
    assert xs.min() >= 0 and xs.max() < stream.input_size
    assert ys.min() >= 0 and ys.max() < stream.output_size
    # Distractors, blank, query and every marked symbol all occur.
    assert set(np.unique(xs)) == set(range(12))
    np.testing.assert_array_equal(stream.marked_mask(xs), xs >= 7)
    np.testing.assert_array_equal(stream.query_mask(xs), xs == 6)


@pytest.mark.parametrize(
    ("symbols", "delay", "jitter", "distractors"),
    [(8, 100, 20, 0.5), (2, 1, 0, 1.0), (2, 2, 0, 0.5), (3, 7, 5, 0.0), (26, 40, 1, 0.9)],
)
def test_delayed_recall_episodes(symbols, delay, jitter, distractors):
    stream = delayed_recall(symbols, delay, jitter, seed=3, distractors=distractors)
    xs, ys = stream.take(100_000)
    marked, queries, remembered = episodes(xs, stream)
    assert marked.size > 100_000 / (delay + 2 * jitter + 1) - 2
    # Marked symbols and queries alternate, starting with a marked symbol; at most one
    # unfinished episode.
    all_marked = np.flatnonzero(stream.marked_mask(xs))
    assert all_marked.size - queries.size in (0, 1)
    assert np.all(marked < queries) and np.all(queries[:-1] < all_marked[1 : queries.size])
    # Every query asks for the symbol of the marked token before it, delay..delay+jitter
    # steps later.
    np.testing.assert_array_equal(ys[queries], remembered)
    assert np.all((remembered >= 0) & (remembered < symbols))
    distance = queries - marked
    assert distance.min() >= delay and distance.max() <= delay + jitter
    if jitter:
        assert set(np.unique(distance)) == set(range(delay, delay + jitter + 1))
    # Leads before each marked symbol: 0..jitter filler steps after the previous query.
    leads = marked[1:] - queries[:-1] - 1
    assert leads.min() >= 0 and leads.max() <= jitter
    assert marked[0] <= jitter
    # Targets are blank everywhere else, and the query mask is exactly the non-blank ones.
    others = np.ones(xs.size, dtype=bool)
    others[queries] = False
    assert np.all(ys[others] == stream.blank)
    np.testing.assert_array_equal(stream.query_mask(xs), ys != stream.blank)
    # Fillers: plain content symbols with probability `distractors`, the blank otherwise.
    fillers = np.ones(xs.size, dtype=bool)
    fillers[all_marked] = fillers[queries] = False
    filler = xs[fillers]
    assert np.all(filler <= stream.blank)
    if delay > 1 or jitter:  # else every step is a marked symbol or a query
        assert np.mean(filler < stream.blank) == pytest.approx(distractors, abs=0.01)
        if distractors:
            assert set(np.unique(filler[filler < stream.blank])) == set(range(symbols))
    else:
        assert filler.size == 0
    assert np.bincount(remembered, minlength=symbols).min() > 0.5 * remembered.size / symbols


def test_delayed_recall_statistics():
    stream = delayed_recall(symbols=4, delay=30, jitter=10, seed=7)
    xs, _ = stream.take(400_000)
    queries = np.count_nonzero(stream.query_mask(xs))
    assert stream.mean_episode_length() == 41
    assert 400_000 / queries == pytest.approx(41, rel=0.02)
    assert np.count_nonzero(stream.marked_mask(xs)) - queries in (0, 1)
    assert stream.memoryless_loss() == pytest.approx(math.log(4) / 41)


def test_delayed_recall_deterministic_and_chunk_invariant():
    xs, ys = delayed_recall(seed=4).take(30)
    parts = delayed_recall(seed=4)
    first, second = parts.take(10), parts.take(20)
    np.testing.assert_array_equal(np.concatenate([first[0], second[0]]), xs)
    np.testing.assert_array_equal(np.concatenate([first[1], second[1]]), ys)
    # Across many internal chunks, and with empty reads.
    whole = delayed_recall(symbols=3, delay=5, jitter=2, seed=9).take(50_000)
    stream = delayed_recall(symbols=3, delay=5, jitter=2, seed=9)
    sizes = [0, 1, 7, 4095, 4096, 0, 3, 10_000, 1801, 29_997]
    pieces = [stream.take(size) for size in sizes]
    for got, expected in zip(zip(*pieces), whole):
        np.testing.assert_array_equal(np.concatenate(got), expected[: sum(sizes)])
    again = delayed_recall(symbols=3, delay=5, jitter=2, seed=9).take(50_000)
    for got, expected in zip(again, whole):
        np.testing.assert_array_equal(got, expected)
    other = delayed_recall(symbols=3, delay=5, jitter=2, seed=10).take(2_000)
    assert not np.array_equal(other[0], whole[0][:2_000])
    assert repr(stream) == "delayed_recall(symbols=3, delay=5, jitter=2, seed=9, distractors=0.5)"


def test_delayed_recall_take_returns_copies():
    stream = delayed_recall(seed=2)
    xs, ys = stream.take(100)
    xs[:] = -1
    ys[:] = -1
    again = delayed_recall(seed=2)
    again.take(100)
    np.testing.assert_array_equal(stream.take(50)[0], again.take(50)[0])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"symbols": 1}, ValueError, r"symbols must be >= 2, got 1"),
        ({"delay": 0}, ValueError, r"delay must be >= 1, got 0"),
        ({"jitter": -1}, ValueError, r"jitter must be >= 0, got -1"),
        ({"distractors": 1.5}, ValueError, r"distractors must be in \[0, 1\], got 1.5"),
        ({"distractors": -0.1}, ValueError, r"distractors must be in \[0, 1\], got -0.1"),
        ({"distractors": float("nan")}, ValueError, r"distractors must be in \[0, 1\], got nan"),
        ({"distractors": "half"}, TypeError, r"distractors must be a real number, got 'half'"),
        ({"distractors": True}, TypeError, r"distractors must be a real number, got True"),
        ({"delay": 10.0}, TypeError, None),
        ({"symbols": "8"}, TypeError, None),
    ],
)
def test_delayed_recall_validation(kwargs, error, message):
    with pytest.raises(error, match=message):
        delayed_recall(**kwargs)


def test_delayed_recall_take_rejects_negative_n():
    with pytest.raises(ValueError, match=r"n must be >= 0, got -2"):
        delayed_recall().take(-2)


# --- TokenStream behaviour ----------------------------------------------------------------

STREAMS = {
    "brackets": lambda seed: distant_brackets(2, 4, 7, seed=seed),
    "anbn": lambda seed: anbn(1, 32, seed=seed),
}


@pytest.mark.parametrize("make", STREAMS.values(), ids=STREAMS.keys())
def test_deterministic_and_chunk_invariant(make):
    whole = make(0).take(30_000)
    assert whole.dtype == np.int64 and whole.shape == (30_000,)
    chunked_stream = make(0)
    sizes = [0, 1, 7, 4095, 4096, 3, 10_000, 1801]
    chunked = np.concatenate([chunked_stream.take(size) for size in sizes])
    np.testing.assert_array_equal(chunked, whole[: sum(sizes)])
    iterated_stream = make(0)
    iterated = [next(iterated_stream) for _ in range(50)] + iterated_stream.take(50).tolist()
    assert iterated == whole[:100].tolist()
    assert not np.array_equal(make(1).take(2000), whole[:2000])


@pytest.mark.parametrize("make", STREAMS.values(), ids=STREAMS.keys())
def test_pairs_continue_the_stream(make):
    reference = make(0).take(10_001)
    stream = make(0)
    xs_parts, ys_parts = [], []
    for size in [1, 999, 0, 5000, 4000]:
        xs, ys = stream.pairs(size)
        assert xs.shape == ys.shape == (size,)
        if size and xs_parts and xs_parts[-1].size:
            assert xs[0] == ys_parts[-1][-1]
        xs_parts.append(xs)
        ys_parts.append(ys)
    np.testing.assert_array_equal(np.concatenate(xs_parts), reference[:-1])
    np.testing.assert_array_equal(np.concatenate(ys_parts), reference[1:])
    assert stream.take(1)[0] == reference[-1]  # pairs consumed exactly n tokens


def test_take_rejects_negative_n():
    with pytest.raises(ValueError, match=r"n must be >= 0, got -1"):
        anbn().take(-1)
    with pytest.raises(ValueError, match=r"n must be >= 0, got -3"):
        distant_brackets().pairs(-3)


# --- text files ---------------------------------------------------------------------------


def test_text_stream_loops(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("hello world\n", encoding="utf-8")
    stream = text_stream(path)
    assert stream.vocabulary.symbols == tuple(sorted(set("hello world\n")))
    assert stream.vocabulary.decode(stream.take(30)) == ("hello world\n" * 3)[:30]
    assert stream.vocabulary.decode(stream.take(12)) == ("hello world\n" * 4)[30:42]
    same = text_stream(str(path))
    xs, ys = same.pairs(24)
    assert same.vocabulary.decode(xs) == "hello world\n" * 2
    assert same.vocabulary.decode(ys) == ("hello world\n" * 3)[1:25]


def test_text_stream_without_loop_ends(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("abcab", encoding="utf-8")
    stream = text_stream(path, loop=False)
    assert stream.take(3).tolist() == [0, 1, 2]
    xs, ys = stream.pairs(10)  # only tokens 3 and 4 remain: one pair
    assert xs.tolist() == [0] and ys.tolist() == [1]
    assert list(stream) == [1]
    assert stream.take(5).size == 0
    assert list(text_stream(path, loop=False)) == [0, 1, 2, 0, 1]


def test_text_stream_with_given_vocabulary(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("cab", encoding="utf-8")
    vocabulary = Vocabulary("cbaz")
    stream = text_stream(path, vocabulary=vocabulary)
    assert stream.vocabulary is vocabulary
    assert stream.take(4).tolist() == [0, 2, 1, 0]
    with pytest.raises(ValueError, match="character 'a' at position 1"):
        text_stream(path, vocabulary=Vocabulary("bc"))


def test_text_stream_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        text_stream(path)
