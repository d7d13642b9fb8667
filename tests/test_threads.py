"""Thread counts are chosen on purpose and recorded; latency records CPU time beside wall time."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from prunekit.cli.main import build_parser, main
from prunekit.errors import ConfigError
from prunekit.measure import Stopwatch, compare_latency, threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before, saved = torch.get_num_threads(), threads._configured
    yield
    torch.set_num_threads(before)
    threads._configured = saved


@pytest.mark.parametrize("arg,env,expected", [
    (3, {"OMP_NUM_THREADS": "2", "PYTEST_XDIST_WORKER": "gw0"}, (3, "explicit")),
    (None, {"OMP_NUM_THREADS": "2", "PYTEST_XDIST_WORKER": "gw0"}, (2, "OMP_NUM_THREADS")),
    (None, {"PYTEST_XDIST_WORKER": "gw1"}, (1, "pytest-xdist")),
    (None, {"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1"}, (1, "torchrun")),
    (None, {"LOCAL_WORLD_SIZE": "1"}, (4, "default")),  # a one-process torchrun is not shared
    (None, {}, (4, "default")),
])
def test_the_thread_count_follows_flag_then_environment_then_the_free_cpus(monkeypatch, arg, env, expected):
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads, "load_average", lambda: 0.3)
    choice = threads.choose_threads(arg, env)
    assert (choice.threads, choice.source) == expected and choice.cpus == 4 and choice.load_avg == 0.3


@pytest.mark.parametrize("cpus,load,expected", [(2, 5.0, 1), (2, 0.77, 1), (2, 0.4, 2), (8, 3.0, 5), (64, 0.0, 8)])
def test_the_default_leaves_the_cores_other_processes_keep_busy(monkeypatch, cpus, load, expected):
    """On 2 cores at load ~5 the default is 1 thread (PyTorch's own default, 2, took 11× longer there)."""
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    monkeypatch.setattr(threads, "load_average", lambda: load)
    assert threads.choose_threads(None, {}).threads == expected


@pytest.mark.parametrize("arg,env,match", [
    (0, {}, "--threads must be a whole number of threads ≥ 1, got 0; pass e.g. --threads 1"),
    (None, {"OMP_NUM_THREADS": "four"}, "OMP_NUM_THREADS must be a whole number of threads ≥ 1, got 'four'"),
    (None, {"OMP_NUM_THREADS": "0"}, "OMP_NUM_THREADS must be .* got '0'; set e.g. OMP_NUM_THREADS=1 or unset it"),
])
def test_a_bad_thread_count_is_refused_by_name(arg, env, match):
    with pytest.raises(ConfigError, match=match):
        threads.choose_threads(arg, env)


def test_configure_applies_and_remembers_the_choice_and_using_restores_it():
    torch.set_num_threads(2)
    choice = threads.configure(1)
    assert torch.get_num_threads() == 1 and threads.current() == choice and choice.source == "explicit"
    with threads.using(2) as inner:
        assert torch.get_num_threads() == 2 and threads.current() == inner
    assert torch.get_num_threads() == 1 and threads.current() == choice
    torch.set_num_threads(2)  # changed behind prunekit's back: current() reports what is in force
    assert threads.current().source == "torch" and threads.current().threads == 2
    assert threads.ensure_configured().threads == 2  # configured once: ensure keeps the caller's count


def test_every_subcommand_takes_threads_and_main_applies_it(capsys):
    parser = build_parser()
    for cmd in ("demo", "run", "check", "sensitivity"):
        assert cmd in parser._subparsers._group_actions[0].choices
    assert parser.parse_args(["demo", "--threads", "2"]).threads == 2
    assert parser.parse_args(["check", "m", "--threads", "1"]).threads == 1
    assert main(["check", "torchvision:nonexistent", "--threads", "0"]) == 2
    assert "--threads must be a whole number of threads ≥ 1, got 0" in capsys.readouterr().err


def test_latency_records_cpu_time_beside_wall_time():
    """A forward that waits (as one descheduled by a busy machine does) takes wall time but no CPU time."""

    class Waits(nn.Module):
        def forward(self, x):
            time.sleep(0.01)
            return x

    lat = compare_latency([Waits(), nn.Linear(8, 8)], torch.randn(1, 8), batch=2, warmup=0, repeats=3)
    assert lat[0].median_ms >= 10 and lat[0].thread_cpu_ms < 5 and lat[0].cpu_ms < 5
    assert lat[0].load_avg == pytest.approx(threads.load_average(), abs=2) and lat[0].threads == torch.get_num_threads()


def test_stopwatch_separates_waiting_from_working():
    watch = Stopwatch()
    time.sleep(0.05)
    sum(i * i for i in range(200_000))
    t = watch.read()
    assert t["wall"] >= 0.05 and t["cpu"] < t["wall"] - 0.03


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="MKL_CBWR is an Intel MKL setting")
def test_configure_asks_mkl_for_the_same_bits_at_every_thread_count(monkeypatch):
    """In a fresh process (MKL reads MKL_CBWR at its first product) a product at 1 and 2 threads is equal."""
    import subprocess
    import sys

    monkeypatch.delenv("MKL_CBWR", raising=False)
    assert threads.configure(1).mkl_cbwr == threads.REPRODUCIBLE_BLAS
    code = ("from prunekit.measure import threads; import torch; threads.configure(1); torch.manual_seed(0); "
            "a, w = torch.randn(64, 784), torch.randn(300, 784); one = a @ w.T; torch.set_num_threads(2); "
            "print(torch.equal(one, a @ w.T))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert threads.configure(1).mkl_cbwr == "COMPATIBLE"  # the user's setting stands
