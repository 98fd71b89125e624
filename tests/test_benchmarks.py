"""The benchmark's own measurements: the heap a learner holds, and a quick timing row."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_step  # noqa: E402

import uoro  # noqa: E402

needs_heap_count = pytest.mark.skipif(
    bench_step.heap_bytes_in_use() is None, reason="the C allocator's count needs glibc"
)


@needs_heap_count
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_uoro_learner_holds_four_parameter_sized_arrays(dtype):
    # θ, θ̃ and Adam's two moments, plus O(|s|): nothing else of the parameters' size.
    n_params = uoro.Learner("gru", bench_step.VOCAB, 64, dtype=dtype).n_params
    per_array = n_params * (4 if dtype == "float32" else 8)
    held = bench_step.bytes_per_learner("gru", 64, dtype, {})
    assert 4 * per_array <= held < 4.3 * per_array


@needs_heap_count
def test_memory_grows_with_the_window_not_with_the_stream():
    short = bench_step.bytes_per_learner("gru", 16, "float32", {"memory": 2})
    long = bench_step.bytes_per_learner("gru", 16, "float32", {"memory": 32})
    assert long > short  # the window's caches
    before = bench_step.heap_bytes_in_use()
    learner = uoro.Learner("gru", bench_step.VOCAB, 16, memory=32)
    learner.step(0, 1)
    grown = bench_step.heap_bytes_in_use() - before
    tokens = [t % bench_step.VOCAB for t in range(20_001)]
    learner.fit(tokens[:-1], tokens[1:])
    del tokens
    assert bench_step.heap_bytes_in_use() - before <= grown + 64 * 1024  # losses' array freed


def test_a_timing_row_has_every_column():
    row = bench_step.measure("rnn", 8, "float32", {}, budget_s=0.005, repeats=1, python_loop=True)
    for key in ("fit_us", "step_us", "forward_us", "fit_over_forward", "bytes_per_learner"):
        assert row[key] > 0
    assert "| rnn | 8 | float32 |" in bench_step.core_table([row])


def test_the_elementwise_suite_times_uoro_beside_rtrl_and_stacks():
    rows = bench_step.elementwise_suite(
        0.002,
        2,
        cells=("gru", "mingru"),
        sizes=(8,),
        stacks=(("minlstm", {"layers": 2}),),
        stack_hidden=8,
    )
    got = [(r["model"], r["algorithm"]) for r in rows]
    assert got == [
        ("gru-8", "uoro"),
        ("gru-8", "rtrl"),
        ("mingru-8", "uoro"),
        ("mingru-8", "rtrl"),
        ("minlstm-8 ×2 layers", "uoro"),
        ("minlstm-8 ×2 layers", "layerwise"),
    ]
    for row in rows:
        assert row["fit_us"] > 0 and row["forward_us"] > 0 and row["fit_over_forward"] > 0
    assert [r["over_first"] for r in rows if r["algorithm"] == "uoro"] == [1.0, 1.0, 1.0]
    # A stack has both layers' parameters; RTRL and UORO learn the same network.
    assert rows[4]["params"] > rows[2]["params"] and rows[3]["params"] == rows[2]["params"]
    table = bench_step.elementwise_table(rows)
    assert "| mingru-8 | rtrl | " in table and "| minlstm-8 ×2 layers | layerwise | " in table


def test_the_dense_cells_rtrl_is_left_out_beyond_64_units():
    rows = bench_step.elementwise_suite(0.002, 1, cells=("rnn", "indrnn"), sizes=(65,), stacks=())
    assert [(r["cell"], r["algorithm"]) for r in rows] == [
        ("rnn", "uoro"),
        ("indrnn", "uoro"),
        ("indrnn", "rtrl"),
    ]


def test_the_cells_option_takes_any_built_in_cell():
    assert bench_step.cell_list("gru, mingru,indrnn") == ("gru", "mingru", "indrnn")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown cell"):
        bench_step.cell_list("gru,nope")
    rows = bench_step.algorithms_suite(0.002, 1, cells=("minlstm", "rnn"))
    header = bench_step.algorithms_table(rows).splitlines()[0]
    assert header.startswith("| algorithm | minlstm-64 | minlstm-256 | rnn-64 |")


@needs_heap_count
def test_many_streams_hold_one_theta_tilde_and_o_of_b_s():
    """As one system (stream_groups=1, as bench_streams times it), B streams add
    per-stream arrays of the state's size, no parameter-sized one."""
    import bench_streams

    n_params = uoro.Learner("gru", bench_step.VOCAB, 64, streams=2).n_params
    two = bench_streams.heap_per_learner("gru", 64, 2)
    many = bench_streams.heap_per_learner("gru", 64, 34)
    per_stream = (many - two) / 32
    assert 0 < per_stream < 0.25 * n_params * 4
    learner = uoro.Learner("gru", bench_step.VOCAB, 64, streams=16, rank=2, stream_groups=1)
    assert learner._core.estimator_arrays["theta_tilde"].shape == (2, learner._core.n_cell_params)
    # By default one estimate per stream: a θ̃ per stream and rank.
    learner = uoro.Learner("gru", bench_step.VOCAB, 64, streams=16, rank=2)
    assert learner._core.estimator_arrays["theta_tilde"].shape == (32, learner._core.n_cell_params)


def test_a_streams_timing_row_has_every_column():
    import bench_streams

    rows = bench_streams.run(0.002, 1, models=(("rnn", 8),), streams=(1, 4))
    assert rows[1]["separate_us"] > 0 and rows[0]["separate_us"] is None
    for row in rows:
        assert row["fit_us"] > 0 and row["forward_us"] > 0 and row["fit_over_forward"] > 0
    assert "| RNN-8 | 4 |" in bench_streams.table(rows)


def test_the_streams_benchmark_takes_the_elementwise_cells_and_their_rtrl():
    import bench_streams

    models = bench_streams.model_list("gru-8,mingru-8-rtrl")
    assert models == (("gru", 8), ("mingru", 8, "rtrl"))
    assert bench_streams.streams_list("1,16") == (1, 16)
    for bad in ("gru", "gru-x", "nope-8", "gru-8-bptt"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_streams.model_list(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        bench_streams.streams_list("0,4")
    rows = bench_streams.run(0.002, 1, models=models, streams=(1, 4))
    assert [r["algorithm"] for r in rows] == ["uoro", "uoro", "rtrl", "rtrl"]
    table = bench_streams.table(rows)
    assert "| GRU-8 | 4 |" in table and "| minGRU-8 RTRL | 4 |" in table
    assert bench_streams.tick_lines(rows) == []  # one batched B: no line


def test_the_streams_tick_line_recovers_a_known_line():
    import bench_streams

    # µs/sample of a tick costing 3 + 0.5·B µs, and 6 µs/sample at B = 1.
    rows = [
        {"cell": "gru", "hidden": 8, "streams": b, "fit_us": (3 + 0.5 * b) / b} for b in (4, 16, 64)
    ]
    rows.insert(0, {"cell": "gru", "hidden": 8, "streams": 1, "fit_us": 6.0})
    (line,) = bench_streams.tick_lines(rows)
    assert line["fixed_us"] == pytest.approx(3) and line["per_stream_us"] == pytest.approx(0.5)
    assert line["r2"] == pytest.approx(1)
    assert line["aim_tick_us"] == pytest.approx(16 * 6 / 5) and line[
        "tick_at_aim_us"
    ] == pytest.approx(11)
    assert "3.00 + 0.500·B µs" in bench_streams.tick_text([line])
    # Without two batched B there is no line.
    assert bench_streams.tick_lines(rows[:2]) == []


def test_the_tick_parts_are_timed_and_fit_inside_the_tick():
    import bench_streams

    rows = bench_streams.run(0.002, 1, models=(("gru", 64),), streams=(1, 16))
    parts = bench_streams.tick_parts(rows, hidden_sizes=(64,), streams=(16,))
    (part,) = parts
    gates, cols = 3 * 64, 64 + 1
    assert part["sums_macs"] == 2 * 16 * gates * cols  # two rank-16 sums over [W_hh | b_hh]
    assert part["products_macs"] > 16 * (gates * cols + gates * 64)  # forward, tangent, readout
    # At these sizes the kernels run near the core's peak: a product left out of the
    # timing (or multiply-adds miscounted) would show beyond it.
    peak = part["fma_peak_gmacs"]
    for kind in ("products", "sums"):
        assert 0 < part[f"{kind}_macs"] / part[f"{kind}_us"] * 1e-3 < 1.25 * peak
    # The tick holds one Adam update of every parameter and much more.
    assert part["tick_us"] > part["adam_us"] > 0
    assert part["rest_us"] == pytest.approx(
        part["tick_us"] - part["products_us"] - part["sums_us"] - part["adam_us"]
    )
    assert part["fit_tick_us"] == pytest.approx(16 * rows[1]["fit_us"])
    assert "| GRU-64 | 16 |" in bench_streams.parts_table(parts)


def test_the_user_cell_benchmark_prints_its_table():
    import re
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_user_cells.py"
    out = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    for row in ("built-in GRU", "NumPy GRU cell", "PyTorch GRUCell (from_torch)"):
        assert re.search(rf"^\| {re.escape(row)} \| [\d,.]+ \| [\d,]+× \|", out.stdout, re.M), row
    added = re.findall(r"\| (\d+)% \|$", out.stdout, re.M)
    assert len(added) == 2  # the library's share, for both user cells


def test_the_deep_river_comparison_runs_or_says_why_not():
    import importlib.util
    import re
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_river_peers.py"
    out = subprocess.run(
        [sys.executable, str(script), "--tokens", "300"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    if importlib.util.find_spec("deep_river") is None:  # optional, never installed by CI
        assert "deep-river comparison skipped" in out.stdout
    else:
        for row in ("uoro RecurrentRegressor", "deep-river LSTMClassifier"):
            assert re.search(rf"^\| {row} .*\| [\d,]+ \|$", out.stdout, re.M), row


def test_the_variants_table_times_every_runnable_variant():
    import bench_variants

    configs = [("rnn", 8, 1), ("gru", 8, 3)]
    best = bench_variants.measure(configs, samples=64, repeats=1)
    assert list(best) == uoro._core.runnable_variants()
    assert "baseline" in best and all(t > 0 for times in best.values() for t in times)
    lines = bench_variants.table(configs, best).splitlines()
    assert len(lines) == 2 + len(configs) and lines[3].startswith("| GRU-8 | 3 |")


def test_the_long_range_benchmark_prints_its_table(capsys, tmp_path):
    import json

    import bench_long_range

    out_json = tmp_path / "long_range.json"
    argv = ["--samples", "3000", "--configs", "gru-uoro", "--hidden", "8", "--delay", "10"]
    results = bench_long_range.main(
        [*argv, "--jitter", "2", "--no-progress", "--json", str(out_json)]
    )
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("|")]
    assert lines[0] == "| " + " | ".join(bench_long_range.COLUMNS) + " |"
    assert len(lines) == 3  # header, rule, one row
    row = lines[2].split(" | ")
    assert len(row) == len(bench_long_range.COLUMNS)
    assert row[0] == "| gru-uoro" and row[1] == "`cell='gru', algorithm='uoro'`"
    assert row[2] == "`bias_ih[n:2n]=4, bias_hh[n:2n]=0`"
    assert row[7] == "0.125"  # chance: 1/8 symbols
    assert "Adam lr 0.001 (constant), gradient norm clipped at 1, slow start" in printed
    (result,) = results["rows"]
    assert result["init"] == bench_long_range.SLOW_INIT["gru"]
    assert result["queries_tail"] > 0 and 0 <= result["query_accuracy_tail"] <= 1
    assert result["us_per_sample"] > 0 and result["timed_samples"] == 2700
    saved = json.loads(out_json.read_text())
    assert saved["rows"][0]["name"] == "gru-uoro"
    assert saved["settings"]["clip_norm"] == 1.0 and saved["settings"]["lr"] == 1e-3
    # Without the slow start, and without clipping.
    argv = ["--samples", "200", "--configs", "mingru-rtrl", "--hidden", "4", "--delay", "5"]
    results = bench_long_range.main([*argv, "--default-init", "--clip-norm", "0", "--no-progress"])
    printed = capsys.readouterr().out
    assert "no clipping, default initialization" in printed
    assert "| mingru-rtrl | `cell='mingru', algorithm='rtrl'` | `default` |" in printed
    assert results["rows"][0]["init"] == {} and results["settings"]["clip_norm"] is None


def test_the_long_range_benchmark_starts_every_cell_slow():
    import bench_long_range

    for name, options in bench_long_range.CONFIGS.items():
        slow = bench_long_range.SLOW_INIT[options["cell"]]
        assert options["init"] == bench_long_range.stack_init(slow, options.get("layers", 1)), name
    hidden, leak = 6, bench_long_range.LEAK
    assert leak == pytest.approx(0.018, abs=5e-4)
    inputs = {"input_size": 5, "hidden_size": hidden, "output_size": 3, "algorithm": "rtrl"}
    learners = {}
    for cell, init in bench_long_range.SLOW_INIT.items():
        learner = uoro.Learner(cell, **inputs)
        before = learner.parameters()
        bench_long_range.initialize(learner, init, hidden, seed=1)
        after = learner.parameters()
        learners[cell] = after
        # Only what `init` names changed.
        changed = {k for k in after if not np.array_equal(after[k], before[k])}
        assert changed == {key.split("[")[0] for key in init}, cell
        np.testing.assert_array_equal(after["readout.weight"], before["readout.weight"])
    gru, mingru = learners["gru"], learners["mingru"]
    n = hidden
    assert np.all(gru["bias_ih"][n : 2 * n] == 4) and np.all(gru["bias_hh"][n : 2 * n] == 0)
    assert np.all(mingru["bias"][:n] == -4) and np.all(np.abs(mingru["bias"][n:]) < 1)
    minlstm = learners["minlstm"]["bias"]
    assert np.all(minlstm[:n] == 4) and np.all(minlstm[n : 2 * n] == -4)
    assert np.all(np.abs(minlstm[2 * n :]) < 1)
    w = learners["indrnn"]["weight_hh"]
    assert np.all((w >= 1 - 2 * leak - 1e-3) & (w <= 1)) and np.ptp(w) > 0
    # The memory each cell keeps per step at the start: 1 - σ(-4) on average.
    z_gru = 1 / (1 + np.exp(-(gru["bias_ih"][n : 2 * n] + gru["bias_hh"][n : 2 * n])))
    z_mingru = 1 / (1 + np.exp(-mingru["bias"][:n]))
    np.testing.assert_allclose(z_gru, 1 - leak, rtol=1e-6)
    np.testing.assert_allclose(z_mingru, leak, rtol=1e-5)
    assert np.mean(w) == pytest.approx(1 - leak, abs=0.01)
    with pytest.raises(KeyError, match="names no parameter"):
        bench_long_range.initialize(uoro.Learner("gru", **inputs), {"bias": 1.0}, hidden, 0)


def test_the_long_range_benchmark_starts_every_layer_of_a_stack_slow():
    import bench_long_range

    slow = bench_long_range.SLOW_INIT
    assert bench_long_range.stack_init(slow["minlstm"], 1) == slow["minlstm"]
    assert bench_long_range.stack_init({"weight_hh": (0.9, 1.0)}, 3) == {
        "weight_hh_l0": (0.9, 1.0), "weight_hh_l1": (0.9, 1.0), "weight_hh_l2": (0.9, 1.0),
    }  # fmt: skip
    stacks = {"mingru2-layerwise": "mingru", "minlstm2-layerwise": "minlstm"}
    n = 6
    for name, cell in stacks.items():
        options = bench_long_range.CONFIGS[name]
        assert options["cell"] == cell and options["layers"] == 2, name
        assert options["algorithm"] == "layerwise", name
        learner = uoro.Learner(cell, 5, n, 3, layers=2, algorithm="layerwise")
        before = learner.parameters()
        bench_long_range.initialize(learner, options["init"], n, seed=1)
        after = learner.parameters()
        changed = {k for k in after if not np.array_equal(after[k], before[k])}
        assert changed == {"bias_l0", "bias_l1"}, name
        # Every layer starts as the single cell does (whose leak the test above checks):
        # its slow rows set alike, the others' default draws kept.
        single = uoro.Learner(cell, 5, n, 3)
        bench_long_range.initialize(single, slow[cell], n, seed=1)
        slow_rows = 2 * n if cell == "minlstm" else n  # minLSTM: f's and i's biases
        for layer in ("bias_l0", "bias_l1"):
            np.testing.assert_array_equal(
                after[layer][:slow_rows], single.parameters()["bias"][:slow_rows]
            )
            np.testing.assert_array_equal(after[layer][slow_rows:], before[layer][slow_rows:])


def test_the_long_range_benchmark_records_a_learning_curve_per_chunk():
    import bench_long_range

    task = {"symbols": 4, "delay": 5, "jitter": 1}
    for name in ("mingru2-layerwise", "minlstm2-layerwise"):
        row = bench_long_range.run_config(
            name, bench_long_range.CONFIGS[name], samples=2000, hidden=4, lr=1e-2, seed=0,
            task=task, clip_norm=1.0, chunk=500,
        )  # fmt: skip
        assert row["options"]["layers"] == 2, name
        assert row["init"] == bench_long_range.CONFIGS[name]["init"], name
        curve = row["curve"]
        # The head's 1,800 samples in chunks of 500, then the tail's 200 in one.
        assert curve["samples"] == [500, 1000, 1500, 1800, 2000], name
        assert all(len(curve[key]) == 5 for key in ("loss", "query_loss", "queries")), name
        assert all(q > 0 for q in curve["queries"]) and np.all(np.isfinite(curve["query_loss"]))
        # The tail's chunk is the table's tail: the same losses, the same queries.
        assert curve["loss"][-1] == pytest.approx(row["loss_tail"], rel=1e-6)
        assert curve["query_loss"][-1] == pytest.approx(row["query_loss_tail"], rel=1e-6)
        assert curve["queries"][-1] == row["queries_tail"]
        assert np.all(np.isfinite(curve["loss"])) and min(curve["loss"]) > 0, name


def test_the_long_range_benchmark_plots_its_learning_curves(tmp_path):
    import json

    import bench_long_range

    out_png, out_json = tmp_path / "curves.png", tmp_path / "long_range.json"
    argv = ["--samples", "1000", "--hidden", "4", "--delay", "5", "--jitter", "1"]
    configs = ["--configs", "mingru-rtrl", "mingru2-layerwise", "minlstm2-layerwise"]
    results = bench_long_range.main(
        [*argv, *configs, "--no-progress", "--plot", str(out_png), "--json", str(out_json)]
    )
    assert [r["name"] for r in results["rows"]] == configs[1:]
    assert out_png.read_bytes().startswith(b"\x89PNG") and out_png.stat().st_size > 10_000
    saved = json.loads(out_json.read_text())
    for row in saved["rows"]:
        assert row["curve"]["samples"] == [900, 1000]  # one head chunk, one tail chunk
        assert len(row["curve"]["query_loss"]) == 2


def test_the_long_range_benchmark_skips_unknown_cells_only(capsys, monkeypatch):
    import bench_long_range

    configs = {
        "absent": {"cell": "no-such-cell", "algorithm": "rtrl"},
        "broken": {"cell": "gru", "algorithm": "tbptt"},  # no truncation: a real error
    }
    monkeypatch.setattr(bench_long_range, "CONFIGS", configs)
    argv = ["--samples", "100", "--hidden", "4", "--delay", "5", "--no-progress"]
    results = bench_long_range.main([*argv, "--configs", "absent"])
    assert results["rows"] == [] and results["skipped"] == ["absent"]
    assert "absent: skipped, this build has no cell 'no-such-cell'" in capsys.readouterr().out
    with pytest.raises(ValueError, match="needs truncation"):
        bench_long_range.main([*argv, "--configs", "broken"])


def test_step_latency_has_ordered_percentiles_beside_fit():
    row = bench_step.step_latency("gru", 8, calls=300, repeats=2)
    assert row["calls"] == 600 and row["fit_us"] > 0 and row["timer_ns"] > 0
    ordered = [row[f"step_{k}_us"] for k in ("p50", "p90", "p99", "p999", "max")]
    assert ordered == sorted(ordered) and ordered[0] > 0
    # Each round's median step less that round's fit; the row keeps their median.
    assert len(row["round_differences_us"]) == 2
    assert row["p50_over_fit_us"] == pytest.approx(np.median(row["round_differences_us"]))
    assert "| gru-8 |" in bench_step.latency_table([row])


def test_estimator_curves_time_a_short_run_over_its_own_last_tenth():
    import estimator_curves
    import streams_learning_curves as slc

    # A run of 1,000 samples whose last chunk reaches the target: over the fixed window
    # (longer than the run) it never would, over its own last tenth it does at 1 s.
    curve = slc.Curve(
        samples=[100 * i for i in range(1, 11)],
        seconds=[0.1 * i for i in range(1, 11)],
        loss=[1.0] * 9 + [0.1],
    )
    assert estimator_curves.last_tenth(curve.samples) == 100
    assert slc.time_to(curve, 10_000, 0.1) is None
    assert slc.time_to(curve, 100, 0.1) == pytest.approx(1.0)

    runs = estimator_curves.run_network("anbn", "gru", 8, slc.QUICK, ["uoro", "kf_rtrl"])
    assert [r.estimator for r in runs] == ["uoro", "kf_rtrl"]
    assert runs[0].time_to_baseline is not None  # UORO reaches its own final loss
    assert all(r.samples > 0 and np.isfinite(r.final_loss) for r in runs)
    assert "| kf_rtrl |" in estimator_curves.markdown(runs)
