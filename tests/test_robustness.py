"""Trustworthy in a long-running stream: divergence guard, exact checkpoints, threads,
memory."""

from __future__ import annotations

import pickle
import sys
import threading
import time

import numpy as np
import pytest

import uoro
from uoro import influence

ALGORITHMS = [
    {"algorithm": "uoro"},
    {"algorithm": "uoro", "rank": 2},
    {"algorithm": "uoro", "memory": 3},
    {"algorithm": "rtrl"},
    {"algorithm": "tbptt", "truncation": 3},
    {"algorithm": "tbptt_chunk", "truncation": 3},
    {"algorithm": "snap1"},
    {"algorithm": "kf_rtrl"},
    {"algorithm": "ok", "rank": 2},
]
ALGORITHM_IDS = [
    "uoro",
    "uoro-r2",
    "uoro-m3",
    "rtrl",
    "tbptt3",
    "tbptt_chunk3",
    "snap1",
    "kf_rtrl",
    "ok-r2",
]


def tokens(n: int, seed: int = 0, vocab: int = 5):
    t = np.random.default_rng(seed).integers(0, vocab, n + 1)
    return t[:-1], t[1:]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


# ---- divergence


def diverging_influence(policy: str) -> uoro.Learner:
    return influence.learner(
        theta=0.0, algorithm="rtrl", lr=1e6, lr_decay=0.0, on_divergence=policy
    )


def test_divergence_raises_and_leaves_the_learner_as_it_was():
    learner = diverging_influence("raise")
    xs, ys = influence.stream(200)
    for t in range(200):
        before = learner.state_dict()
        try:
            learner.step(xs[t], ys[t])
        except uoro.DivergenceError as error:
            assert "refused" in str(error)
            assert_same_state(learner.state_dict(), before)
            break
    else:
        pytest.fail("a learning rate of 1e6 must diverge")
    assert np.isfinite(learner.theta).all()


def test_divergence_skip_policy_counts_and_keeps_learner_finite():
    learner = diverging_influence("skip")
    xs, ys = influence.stream(200)
    with pytest.warns(RuntimeWarning, match="in a row"):
        learner.fit(xs, ys)
    assert learner.skipped_steps > 0
    assert np.isfinite(learner.theta).all() and np.isfinite(learner.state).all()


@pytest.mark.parametrize("options", ALGORITHMS, ids=ALGORITHM_IDS)
def test_exploding_input_is_refused_by_every_algorithm(options):
    learner = uoro.Learner("rnn", 3, 4, 2, loss="squared_error", **options)
    xs, ys = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    learner.fit(xs, ys)
    before = learner.state_dict()
    with pytest.raises(uoro.DivergenceError):
        learner.step(np.full(3, 1e30, np.float32), np.zeros(2, np.float32))
    assert_same_state(learner.state_dict(), before)


def test_divergence_inside_a_chunk_names_the_sample_and_keeps_the_first_ones():
    xs, ys = influence.stream(300)
    reference = diverging_influence("raise")
    losses = []
    for t in range(300):  # find where a step-by-step run diverges
        try:
            losses.append(reference.step(xs[t], ys[t]))
        except uoro.DivergenceError as error:
            assert error.index == 0 and error.losses.shape == (0,)
            break
    assert 0 < t < 299
    learner = diverging_influence("raise")
    with pytest.raises(uoro.DivergenceError, match=f"sample {t} of the chunk") as raised:
        learner.fit(xs, ys)
    assert_same_state(learner.state_dict(), reference.state_dict())
    # The error says where the chunk stopped and keeps the losses of what was applied.
    assert raised.value.index == t
    np.testing.assert_array_equal(raised.value.losses, losses)


def test_non_finite_values_are_refused_by_setters():
    learner = uoro.Learner("gru", 4, 8)
    theta = learner.theta
    theta[3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        learner.theta = theta
    with pytest.raises(ValueError, match=r"theta must have shape"):
        learner.theta = theta[:-1]


# ---- checkpoints


@pytest.mark.parametrize("options", ALGORITHMS, ids=ALGORITHM_IDS)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_checkpoint_resumes_bit_exactly(cell, options, tmp_path):
    xs, ys = tokens(80)
    make = lambda: uoro.Learner(cell, 5, 6, lr=1e-2, seed=4, **options)  # noqa: E731
    straight = make()
    straight_losses = straight.fit(xs, ys)

    first = make()
    first.fit(xs[:37], ys[:37])  # mid-window for the windowed algorithms
    first.save(tmp_path / "ckpt.npz")
    from_file = uoro.load(tmp_path / "ckpt.npz")
    from_pickle = pickle.loads(pickle.dumps(first))
    from_dict = make()
    from_dict.load_state_dict(first.state_dict())
    for resumed in (from_file, from_pickle, from_dict):
        losses = resumed.fit(xs[37:], ys[37:])
        np.testing.assert_array_equal(losses, straight_losses[37:])
        assert_same_state(resumed.state_dict(), straight.state_dict())


def test_checkpoint_float64_dense_squared_error(tmp_path):
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(50, 2)), rng.normal(size=(50, 1))
    make = lambda: uoro.Learner(
        "rnn",
        2,
        5,
        1,
        loss="squared_error",
        dtype="float64",  # noqa: E731
        optimizer="sgd",
        lr=1e-2,
        clip_norm=1.0,
    )
    straight, first = make(), make()
    straight.fit(xs, ys)
    first.fit(xs[:20], ys[:20])
    first.save(tmp_path / "c.npz")
    resumed = uoro.load(tmp_path / "c.npz")
    resumed.fit(xs[20:], ys[20:])
    assert_same_state(resumed.state_dict(), straight.state_dict())


def test_bad_checkpoints_are_refused_cleanly(tmp_path):
    learner = uoro.Learner("gru", 4, 8)
    learner.fit(*tokens(10, vocab=4))
    state = learner.state_dict()
    other = uoro.Learner("gru", 4, 8, seed=1)
    before = other.state_dict()

    with pytest.raises(ValueError, match="format_version"):
        other.load_state_dict({**state, "format_version": 99})
    with pytest.raises(ValueError, match=r"configuration differs .*\['hidden_size'\]"):
        uoro.Learner("gru", 4, 9).load_state_dict(state)
    with pytest.raises(ValueError, match=r"'theta' must be float32 of shape"):
        other.load_state_dict({**state, "theta": state["theta"].astype(np.float64)})
    with pytest.raises(ValueError, match=r"'adam_m' must be float32 of shape"):
        other.load_state_dict({**state, "adam_m": state["adam_m"][:-1]})
    with pytest.raises(ValueError, match="'state' contains NaN"):
        other.load_state_dict({**state, "state": np.full_like(state["state"], np.nan)})
    with pytest.raises(KeyError, match="lacks 'window'"):
        other.load_state_dict({k: v for k, v in state.items() if k != "window"})
    assert_same_state(other.state_dict(), before)  # nothing was written

    np.savez(tmp_path / "not.npz", theta=state["theta"])
    with pytest.raises(ValueError, match="not a uoro checkpoint"):
        uoro.load(tmp_path / "not.npz")
    # A file carrying a pickled object is refused by the loader, not executed.
    np.savez(tmp_path / "evil.npz", format_version=np.array(1), config=np.array([{}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        uoro.load(tmp_path / "evil.npz")


# ---- threads


@pytest.mark.slow
def test_learners_train_in_parallel_threads_with_speedup():
    """Two learners in two threads: same results as one after the other, in less time.
    Wall-clock bound: needs an otherwise idle machine with two free cores, so it runs by
    hand (`pytest -m slow`); `test_fit_releases_the_gil` checks the mechanism in CI."""
    xs, ys = tokens(20_000)
    make = lambda seed: uoro.Learner("gru", 5, 32, seed=seed)  # noqa: E731
    make(0).fit(xs[:100], ys[:100])  # warm up
    sequential_times, parallel_times = [], []
    for _ in range(5):
        start = time.perf_counter()
        sequential = [make(s).fit(xs, ys) for s in (0, 1)]
        sequential_times.append(time.perf_counter() - start)

        learners, results = [make(0), make(1)], {}

        def train(i: int, learners=learners, results=results) -> None:
            results[i] = learners[i].fit(xs, ys)

        threads = [threading.Thread(target=train, args=(i,)) for i in range(2)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        parallel_times.append(time.perf_counter() - start)
        for i in range(2):
            np.testing.assert_array_equal(results[i], sequential[i])
    # With the GIL held the ratio would be >= 1; the two cores here may share one physical
    # core (measured ratio about 0.8), hence the modest bound.
    assert min(parallel_times) < 0.9 * min(sequential_times), (parallel_times, sequential_times)


def test_fit_releases_the_gil():
    """While one thread runs a long `fit`, Python code in another keeps running (with the
    GIL held it would stall until the fit ends)."""
    xs, ys = tokens(200_000)  # about a second of learning: longer than the measurement
    learner = uoro.Learner("gru", 5, 64)

    def count_for(seconds: float) -> int:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
        return n

    alone = count_for(0.2)
    worker = threading.Thread(target=learner.fit, args=(xs, ys))
    worker.start()
    time.sleep(0.01)
    during = count_for(0.2)
    busy_throughout = worker.is_alive()
    worker.join()
    assert busy_throughout, "the fit must outlast the measurement"
    assert during > 0.3 * alone, (during, alone)


def test_one_learner_used_from_two_threads_is_refused_not_corrupted():
    xs, ys = tokens(200_000)
    learner, reference = uoro.Learner("gru", 5, 16), uoro.Learner("gru", 5, 16)
    worker = threading.Thread(target=learner.fit, args=(xs, ys))
    worker.start()
    refused = []
    while worker.is_alive() and len(refused) < 3:
        for action in (lambda: learner.step(0, 1), lambda: learner.theta, learner.reset_state):
            try:
                action()
            except RuntimeError as error:
                refused.append(str(error))
        time.sleep(0.001)
    worker.join()
    assert refused and "in use by another thread" in refused[0]
    reference.fit(xs, ys)
    np.testing.assert_array_equal(learner.theta, reference.theta)


# ---- memory


def resident_kib() -> int:
    """Resident memory now (Linux), or its peak so far elsewhere: either grows if a run
    leaks."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    except OSError:
        import resource  # not on Windows

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def test_a_million_steps_do_not_grow_memory():
    learner = uoro.Learner("gru", 5, 8)
    xs, ys = tokens(10_000)
    learner.fit(xs, ys)
    start = resident_kib()
    for _ in range(100):
        learner.fit(xs, ys)
    assert resident_kib() - start < 1024
    assert learner.steps == 1_010_000
