"""Runs on a Dask cluster (``run_many(client=...)``, ``uoro experiment ... --scheduler``):
the same numbers as the process pool, failures reported by name while the rest finish,
clear errors for a missing Dask or an unreachable scheduler."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from uoro import experiments
from uoro.cli import main

distributed = pytest.importorskip("distributed")  # in the test extra: CI runs these

# Dask warns (and pytest would fail) when --scheduler local finds its default dashboard
# port taken, e.g. by another cluster on the machine; it then uses another port, and
# leaves the socket of its probe of the taken port to the garbage collector.
DASK_WARNINGS = [
    pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning"),
    pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning:distributed"),
]
pytestmark = DASK_WARNINGS

GRID = [
    experiments.influence_config(algorithm=algorithm, lr=lr, steps=3000, chunk=500, **extra)
    for algorithm, extra in (("uoro", {}), ("tbptt_chunk", {"truncation": 10}))
    for lr in (3e-4, 1e-3)
]
RESULT_COLUMNS = ("step", "loss", "cumulative_loss", "theta")  # all but the wall time


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as dask_client:
        yield dask_client


def rows(curve: experiments.Curve) -> list[tuple[float, ...]]:
    assert curve.theta is not None
    return list(zip(curve.steps, curve.loss, curve.cumulative_loss, curve.theta))


def test_dask_gives_the_numbers_of_the_process_pool(client):
    seen: list[experiments.Curve | experiments.RunFailure] = []
    on_dask = experiments.run_many(GRID, client=client, finished=seen.append)
    in_processes = experiments.run_many(GRID, jobs=2)
    assert [curve.config for curve in on_dask] == GRID  # in the order of the configs
    assert sorted(id(curve) for curve in seen) == sorted(id(curve) for curve in on_dask)
    for dask_curve, local_curve in zip(on_dask, in_processes):
        assert dask_curve.steps_done == 3000
        assert rows(dask_curve) == rows(local_curve)  # bit for bit: runs are seeded
    assert len({rows(curve)[-1] for curve in on_dask}) == len(GRID)  # not one run 4 times


def test_a_failing_run_is_named_and_the_others_finish(client, tmp_path):
    # A file that exists on no worker: the run raises there, not here.
    missing = experiments.text_config(tmp_path / "nowhere.txt", hidden=8, steps=200, chunk=100)
    configs = [GRID[0], missing, GRID[1]]
    seen: list[experiments.Curve | experiments.RunFailure] = []
    with pytest.raises(experiments.RunsFailed, match="1 of 3 run") as raised:
        experiments.run_many(configs, client=client, finished=seen.append)
    [failure] = raised.value.failures
    assert failure.config == missing
    assert failure.name == f"{missing.label} seed 0"
    assert failure.error.startswith("FileNotFoundError:") and "nowhere.txt" in failure.error
    assert failure.name in str(raised.value)
    assert [curve.config for curve in raised.value.curves] == [GRID[0], GRID[1]]
    assert all(curve.steps_done == 3000 for curve in raised.value.curves)
    assert len(seen) == 3


def read_rows(path: Path) -> list[tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [tuple(row[c] for c in RESULT_COLUMNS) for row in csv.DictReader(handle)]


def test_cli_scheduler_local_writes_the_csvs_of_jobs(tmp_path):
    common = ["experiment", "influence", "--seeds", "0,3", "--steps", "3000", "--chunk", "1000"]
    common += ["--lr", "1e-3", "--no-progress"]
    runs = {"dask": ["--scheduler", "local", "--jobs", "2"], "jobs": ["--jobs", "2"]}
    for name, extra in runs.items():
        result = CliRunner().invoke(main, [*common, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "jobs").glob("*seed*.csv"))
    assert len(files) == 2
    assert sorted(p.name for p in (tmp_path / "dask").glob("*seed*.csv")) == files
    for name in files:
        assert read_rows(tmp_path / "dask" / name) == read_rows(tmp_path / "jobs" / name)
        assert len(read_rows(tmp_path / "dask" / name)) == 3


def test_missing_dask_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'uoro\[distributed\]'"):
        experiments.connect("local")
    result = CliRunner().invoke(
        main, ["experiment", "influence", "--scheduler", "local", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "uoro[distributed]" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("*.csv"))


def test_unreachable_or_malformed_scheduler_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="scheduler must be 'local' or the address"):
        experiments.connect("my-cluster")
    with pytest.raises(ValueError, match="workers applies to scheduler='local' only"):
        experiments.connect("tcp://127.0.0.1:9", workers=2)
    monkeypatch.setattr(experiments, "SCHEDULER_TIMEOUT", 1.0)
    for arguments, message in (
        (["--scheduler", "tcp://127.0.0.1:9"], "no Dask scheduler answered at 'tcp://127.0.0.1:9'"),
        (["--scheduler", "tcp://127.0.0.1:9", "--jobs", "2"], "--jobs applies without"),
    ):
        result = CliRunner().invoke(
            main, ["experiment", "influence", *arguments, "--out", str(tmp_path)]
        )
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("*.csv"))


def test_run_many_rejects_jobs_with_a_client(client):
    with pytest.raises(ValueError, match="give jobs or client, not both"):
        experiments.run_many(GRID, jobs=2, client=client)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        experiments.run_many(GRID, jobs=0)
