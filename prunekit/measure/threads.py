"""How many intra-op threads PyTorch uses, chosen on purpose and recorded with every measurement.

PyTorch's default is one thread per physical core. On a machine that other processes share that
oversubscribes the cores: on 2 cores at a load of ~5, ``prunekit demo`` took 5 min 44 s with the
default 2 threads and 30 s with one (threads that wait for each other at every op's barrier while
the scheduler runs someone else). So prunekit picks the count itself, in this order:

1. an explicit count (``--threads N``, :func:`configure(N) <configure>`, :func:`using`);
2. ``OMP_NUM_THREADS`` (the variable OpenMP and PyTorch read);
3. one thread per process when several processes share the machine by design: a pytest-xdist
   worker (``PYTEST_XDIST_WORKER``) or a torchrun/DDP rank (``LOCAL_WORLD_SIZE`` > 1);
4. otherwise the CPUs this process may run on (its affinity mask), less the ones other runnable
   processes already keep busy (the 1-minute load average), at least 1 and at most 8 (the small
   models here gain nothing from more).

The choice (count, where it came from, CPUs, load) is a :class:`ThreadChoice`; run reports record it.

Results should not depend on the count either. Intel MKL (PyTorch's CPU BLAS) splits a matrix
product's reductions by thread, so 1 and 2 threads give products that differ in the last bits, and a
training run amplifies that into different masks (the demo measured −0.50 and −0.20 pt for seed 0).
MKL's strict conditional numerical reproducibility mode (``MKL_CBWR=AVX2,STRICT``) gives the same
bits at any thread count (LeNet-300-100: bitwise equal weights after an epoch at 1 and 2 threads,
about 3% slower); :func:`configure` sets it unless ``MKL_CBWR`` is set already. MKL reads it at its
first product, so it acts where :func:`configure` runs first (the CLI does, before any work).
oneDNN convolutions' weight gradients still differ by thread count.

Example:
    >>> choice = configure()            # the default above; torch.get_num_threads() == choice.threads
    >>> with using(1):                  # a single-thread section (e.g. a latency table)
    ...     ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import torch

from prunekit.errors import ConfigError

__all__ = ["ThreadChoice", "available_cpus", "choose_threads", "configure", "current", "load_average", "using"]

MAX_DEFAULT_THREADS = 8
REPRODUCIBLE_BLAS = "AVX2,STRICT"  # MKL_CBWR: the same bits at any thread count


@dataclass(frozen=True)
class ThreadChoice:
    """An intra-op thread count and why it was chosen.

    Attributes:
        threads: ``torch.get_num_threads()`` once applied.
        source: ``explicit``, ``OMP_NUM_THREADS``, ``pytest-xdist``, ``torchrun`` or ``default``
            (``torch`` when prunekit did not choose: the count found in force).
        cpus: CPUs in this process's affinity mask.
        load_avg: 1-minute load average when the choice was made (None where the OS has none).
        mkl_cbwr: ``MKL_CBWR`` in force (``AVX2,STRICT``: MKL products independent of the thread count).
    """

    threads: int
    source: str
    cpus: int
    load_avg: float | None
    mkl_cbwr: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_configured: ThreadChoice | None = None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, this one included), or None."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _positive_int(value: object, what: str, fix: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1 or isinstance(value, bool):
        raise ConfigError(f"{what} must be a whole number of threads ≥ 1, got {value!r}; {fix}")
    return n


def choose_threads(threads: int | None = None, environ: dict[str, str] | None = None) -> ThreadChoice:
    """The thread count to use (see the module docstring for the order); applies nothing."""
    env = os.environ if environ is None else environ
    cpus, load = available_cpus(), load_average()
    if threads is not None:
        return ThreadChoice(_positive_int(threads, "--threads", "pass e.g. --threads 1"), "explicit", cpus, load)
    if env.get("OMP_NUM_THREADS", "").strip():
        n = _positive_int(env["OMP_NUM_THREADS"], "OMP_NUM_THREADS", "set e.g. OMP_NUM_THREADS=1 or unset it")
        return ThreadChoice(n, "OMP_NUM_THREADS", cpus, load)
    if env.get("PYTEST_XDIST_WORKER"):
        return ThreadChoice(1, "pytest-xdist", cpus, load)
    if int(env.get("LOCAL_WORLD_SIZE", "1") or 1) > 1:
        return ThreadChoice(1, "torchrun", cpus, load)
    # A process that has just started is not yet in the 1-minute load average; rounding (not + 1) keeps two
    # runs started together on an idle 2-core machine at 1 thread each (at 2 each, both ran 3x slower).
    free = cpus if load is None else round(cpus - load)
    return ThreadChoice(max(1, min(cpus, free, MAX_DEFAULT_THREADS)), "default", cpus, load)


def configure(threads: int | None = None) -> ThreadChoice:
    """Chooses the intra-op thread count (:func:`choose_threads`), applies it with
    ``torch.set_num_threads``, asks MKL for thread-count-independent results (``MKL_CBWR``, see the
    module docstring) and remembers the choice for :func:`current`. Returns it."""
    global _configured
    choice = choose_threads(threads)
    os.environ.setdefault("MKL_CBWR", REPRODUCIBLE_BLAS)
    choice = replace(choice, mkl_cbwr=os.environ["MKL_CBWR"])
    torch.set_num_threads(choice.threads)
    _configured = choice
    return choice


def current() -> ThreadChoice:
    """The choice in force: the last :func:`configure`, or (source ``torch``) the count PyTorch uses now
    when prunekit chose none or it was changed since."""
    n = torch.get_num_threads()
    if _configured is not None and _configured.threads == n:
        return _configured
    return ThreadChoice(n, "torch", available_cpus(), load_average(), os.environ.get("MKL_CBWR"))


def ensure_configured() -> ThreadChoice:
    """:func:`configure` with the default unless a count was configured already in this process; runners
    call it where they start so a run from Python chooses its threads as the CLI does."""
    return current() if _configured is not None else configure()


@contextmanager
def using(threads: int) -> Iterator[ThreadChoice]:
    """Runs a block with ``threads`` intra-op threads, then restores the previous count and choice."""
    global _configured
    before, saved = torch.get_num_threads(), _configured
    choice = ThreadChoice(_positive_int(threads, "threads", "pass e.g. 1"), "explicit", available_cpus(),
                          load_average(), os.environ.get("MKL_CBWR"))
    torch.set_num_threads(choice.threads)
    _configured = choice
    try:
        yield choice
    finally:
        torch.set_num_threads(before)
        _configured = saved
