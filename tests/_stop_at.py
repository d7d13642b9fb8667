"""The ``prunekit`` command, stopping itself (SIGSTOP) right after its run's journal writes a state that matches
``PRUNEKIT_TEST_STOP_AT`` (a Python expression on ``s``, the state.json dict), so that a test can kill or signal it
at exactly that point, however loaded the machine is (no sleeping and hoping). Test helper, not a test.

Usage: ``PRUNEKIT_TEST_STOP_AT='s["current"] is not None' python tests/_stop_at.py run RECIPE --out OUT``
"""

import os
import signal
import sys
import time
from pathlib import Path


def wait_stopped(pid: int, timeout: float = 300.0) -> bool:
    """Waits until process ``pid`` is stopped (True) or gone (False), polling its state in /proc."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        state = stat.rpartition(")")[2].split()[0]
        if state in ("T", "t"):
            return True
        if state in ("Z", "X"):
            return False
        time.sleep(0.01)
    raise TimeoutError(f"process {pid} neither stopped nor ended within {timeout} s")


def main() -> int:
    from prunekit.training import journal

    condition = os.environ["PRUNEKIT_TEST_STOP_AT"]
    write_index = journal.Journal._write_index

    def write_then_maybe_stop(self) -> None:
        write_index(self)
        if eval(condition, {}, {"s": self.state}):  # noqa: S307 - the test's own expression
            os.kill(os.getpid(), signal.SIGSTOP)

    journal.Journal._write_index = write_then_maybe_stop
    from prunekit.cli.main import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
