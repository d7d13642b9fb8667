"""Output directories that are written whole or not at all.

Results are written into a hidden staging directory beside the target and moved into place only
when everything succeeded, so a failed run never leaves a half-written output directory — and an
existing one is only replaced with ``force``, and only when it holds prunekit results: every output
directory carries a marker file (:data:`MARKER`), and ``--force`` refuses a directory without one (it
may hold anyone's files). The replacement keeps the old directory's permissions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prunekit.errors import OutputExistsError

__all__ = ["MARKER", "check_output_dir", "staged_output"]

#: The file that marks a directory as prunekit's output (so --force may replace it).
MARKER = ".prunekit-output"


def check_output_dir(out: str | Path, force: bool) -> Path:
    """Refuses a non-empty ``out`` unless ``force`` and it holds prunekit results; returns it as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {str(out)!r} is a file; choose a directory with --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(f"output directory {str(out)!r} already holds results; pass --force to "
                                    "replace them, or choose another --out")
        if not _is_ours(out):
            raise OutputExistsError(f"output directory {str(out)!r} holds files that are not prunekit results (no "
                                    f"{MARKER}); --force replaces only a directory prunekit wrote: choose another "
                                    "--out or empty it yourself")
    return out


@contextlib.contextmanager
def staged_output(out: str | Path, force: bool) -> Iterator[Path]:
    """Yields a staging directory; on success it replaces ``out``, on error it is deleted."""
    out = check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        yield stage
        (stage / MARKER).write_text("prunekit output directory: prunekit --force may replace it\n")
        mode = stat.S_IMODE(out.stat().st_mode) if out.is_dir() else 0o777 & ~_umask()
        os.chmod(stage, mode)  # mkdtemp makes it 0700; keep the old directory's mode (or the usual one)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{stage.name.rsplit('-', 1)[-1]}")
        out.rename(old)
    stage.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _is_ours(out: Path) -> bool:
    """The marker, or the report.json + recipe.yaml pair of an output written before markers existed."""
    return (out / MARKER).is_file() or ((out / "report.json").is_file() and (out / "recipe.yaml").is_file())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
