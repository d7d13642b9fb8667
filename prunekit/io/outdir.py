"""Output directories that are written whole or not at all.

Results are written into a hidden staging directory beside the target and moved into place only
when everything succeeded, so a failed run never leaves a half-written output directory — and an
existing one is only replaced with ``force``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prunekit.errors import OutputExistsError

__all__ = ["check_output_dir", "staged_output"]


def check_output_dir(out: str | Path, force: bool) -> Path:
    """Refuses a non-empty ``out`` unless ``force``; returns it as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {str(out)!r} is a file; choose a directory with --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"output directory {str(out)!r} already holds results; pass --force to "
                                "replace them, or choose another --out")
    return out


@contextlib.contextmanager
def staged_output(out: str | Path, force: bool) -> Iterator[Path]:
    """Yields a staging directory; on success it replaces ``out``, on error it is deleted."""
    out = check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:
        yield stage
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
