"""Output directories that are written whole or not at all, by one run at a time.

Results are written into a hidden staging directory beside the target (``.<out>.staging-XXXX/``) and moved
into place only when everything succeeded, so a failed run never leaves a half-written output directory — and
an existing one is only replaced with ``force``, and only when it holds prunekit results: every output
directory carries a marker file (:data:`MARKER`), and ``--force`` refuses a directory without one (it may hold
anyone's files). The replacement keeps the old directory's permissions.

Around that, :class:`OutputDir` handles what goes wrong around a run:

- a lock (``.<out>.lock`` beside it, an ``flock`` the kernel releases when the process dies, even by SIGKILL)
  is taken before any work, so a second run into the same ``out`` is refused at once, not after training;
- staging directories that a killed run left behind are found on the next run: one without results or
  checkpoint is removed (saying so), one holding a checkpoint (:data:`CHECKPOINT_DIR`) is resumed with
  ``resume`` or discarded with ``force`` (refused otherwise), one holding complete results (its final move
  failed) is reported and left alone;
- a final move that fails says where the complete results are (they stay in the staging directory);
- the output's name is checked first (a name too long for the staging directory's would fail only at the end).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prunekit.errors import OutputExistsError, OutputWriteError

__all__ = ["MARKER", "CHECKPOINT_DIR", "OutputDir", "check_output_dir", "staged_output"]

#: The file that marks a directory as prunekit's output (so --force may replace it).
MARKER = ".prunekit-output"
#: The folder of a staging directory that holds a resumable run's checkpoint (removed before the final move).
CHECKPOINT_DIR = ".checkpoint"
_STAGING = ".staging-"
_SUFFIX_LEN = 8  # mkdtemp's random suffix


def _stderr_notice(msg: str) -> None:
    print(f"prunekit: note: {msg}", file=sys.stderr, flush=True)


def check_output_dir(out: str | Path, force: bool) -> Path:
    """Refuses a non-empty ``out`` unless ``force`` and it holds prunekit results, and a name the staging
    directory beside it could not have; returns it as a Path."""
    out = Path(out)
    if out.name in ("", ".", ".."):
        raise OutputExistsError(f"output path {str(out)!r} names no directory of its own (results replace it "
                                "whole); give a new directory, e.g. --out runs/mine")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {str(out)!r} is a file; choose a directory with --out")
    _check_name_length(out)
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(f"output directory {str(out)!r} already holds results; pass --force to "
                                    "replace them, or choose another --out")
        if not _is_ours(out):
            raise OutputExistsError(f"output directory {str(out)!r} holds files that are not prunekit results (no "
                                    f"{MARKER}); --force replaces only a directory prunekit wrote: choose another "
                                    "--out or empty it yourself")
    return out


def _check_name_length(out: Path) -> None:
    parent = _existing_ancestor(out.parent)
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    longest = len(f".{out.name}{_STAGING}".encode()) + _SUFFIX_LEN
    if longest > limit:
        raise OutputExistsError(f"output name {out.name[:40]!r}… is {len(out.name.encode())} bytes: its staging "
                                f"directory's name would exceed this file system's {limit}; choose a name of at most "
                                f"{limit - longest + len(out.name.encode())} bytes")


def _existing_ancestor(p: Path) -> Path:
    p = p if str(p) else Path(".")
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


class OutputDir:
    """The output of one run: lock, staging directory, final move. Use as a context manager (or call
    :meth:`open` and :meth:`close`); :meth:`commit` moves the staging directory into place.

    Args:
        out: the output directory.
        force: replace results prunekit wrote there; discard a killed run's checkpoint.
        resume: continue in the staging directory that holds a killed run's checkpoint (see
            :attr:`resumed`).
        notice: where one-line notes go (default: stderr).
    """

    def __init__(self, out: str | Path, force: bool = False, resume: bool = False,
                 notice: Callable[[str], None] = _stderr_notice) -> None:
        self.out, self.force, self.resume, self.notice = Path(out), force, resume, notice
        self.stage: Path | None = None
        self.resumed = False  # the staging directory was a killed run's (it holds its checkpoint)
        self._lock_fd: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def open(self) -> OutputDir:
        """Checks the output, takes the lock, deals with stale staging directories, makes (or resumes) one."""
        check_output_dir(self.out, self.force)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputWriteError(f"cannot create the output's parent {str(self.out.parent)!r} ({e.strerror}); "
                                   "choose a writable --out") from None
        self._lock()
        try:
            checkpointed = self._sweep()
            if self.resume:
                if checkpointed is None:
                    raise OutputWriteError(f"--resume: no checkpoint of an unfinished run into {str(self.out)!r} "
                                           f"(no {self.staging_glob()}/ with one beside it); run without --resume")
                self.stage, self.resumed = checkpointed, True
            else:
                self.stage = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}{_STAGING}"))
        except BaseException:
            self.close()
            raise
        return self

    def commit(self) -> None:
        """Moves the staging directory into place (replacing ``out``); on failure says where the results are."""
        stage, out = self.stage, self.out
        assert stage is not None, "OutputDir.commit before open"
        shutil.rmtree(stage / CHECKPOINT_DIR, ignore_errors=True)
        (stage / MARKER).write_text("prunekit output directory: prunekit --force may replace it\n")
        mode = stat.S_IMODE(out.stat().st_mode) if out.is_dir() else 0o777 & ~_umask()
        os.chmod(stage, mode)  # mkdtemp makes it 0700; keep the old directory's mode (or the usual one)
        old = None
        try:
            if out.exists():
                old = out.with_name(f".{out.name}.old-{stage.name.rsplit('-', 1)[-1]}")
                out.rename(old)
            stage.rename(out)
        except OSError as e:
            if old is not None and not out.exists():
                with contextlib.suppress(OSError):
                    old.rename(out)
            self.stage = None  # kept: abandon() must not delete the results
            raise OutputWriteError(f"could not move the results into {str(out)!r} ({type(e).__name__}: "
                                   f"{e.strerror or e}); the complete results are in {str(stage)!r}: move that "
                                   "directory there yourself") from None
        self.stage = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abandon(self, keep_checkpoint: bool = False) -> str:
        """Deletes the staging directory — unless ``keep_checkpoint`` and it holds one; says where work is."""
        stage = self.stage
        if stage is None:
            return f"nothing was written to {str(self.out)!r}"
        if keep_checkpoint and (stage / CHECKPOINT_DIR).is_dir():
            return f"its checkpoint is in {str(stage)!r}; {str(self.out)!r} is untouched"
        shutil.rmtree(stage, ignore_errors=True)
        self.stage = None
        return f"nothing was written to {str(self.out)!r}"

    def close(self) -> None:
        """Releases the lock (and removes its file)."""
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._lock_path())
        os.close(self._lock_fd)  # closing releases the flock
        self._lock_fd = None

    def __enter__(self) -> OutputDir:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the lock ----------------------------------------------------------------------------------------------
    def _lock_path(self) -> Path:
        return self.out.with_name(f".{self.out.name}.lock")

    def _lock(self) -> None:
        import fcntl

        path = self._lock_path()
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputWriteError(f"cannot write beside the output {str(self.out)!r} ({e.strerror}: "
                                       f"{str(path)!r}); choose a --out in a writable directory") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read(fd)
                os.close(fd)
                raise OutputExistsError(f"another prunekit run ({holder or 'a running process'}) is writing "
                                        f"{str(self.out)!r}; wait for it to finish or choose another --out") from None
            # The holder before us may have removed the file after we opened it: lock the file that is there.
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self._lock_fd = fd

    # -- what killed runs left ---------------------------------------------------------------------------------
    def staging_glob(self) -> str:
        return f".{self.out.name}{_STAGING}*"

    def _sweep(self) -> Path | None:
        """Handles the staging (and half-swapped) directories of earlier runs; returns the newest one with a
        checkpoint when resuming."""
        parent, name = self.out.parent, self.out.name
        stale = sorted((p for p in parent.glob(self.staging_glob()) if p.is_dir()), key=lambda p: p.stat().st_mtime)
        checkpointed = [p for p in stale if (p / CHECKPOINT_DIR).is_dir() and not (p / MARKER).is_file()]
        for p in stale:
            if (p / MARKER).is_file():
                self.notice(f"{str(p)!r} holds the complete results of an earlier run whose final move failed; move "
                            f"it to {str(self.out)!r} or delete it")
            elif p in checkpointed:
                continue
            else:
                shutil.rmtree(p, ignore_errors=True)
                self.notice(f"removed {str(p)!r}, left by a run into {str(self.out)!r} that was stopped before it "
                            "finished")
        for p in parent.glob(f".{name}.old-*"):
            if not self.out.exists():
                p.rename(self.out)
                self.notice(f"restored {str(self.out)!r} from {str(p)!r} (a run was stopped while replacing it)")
            else:
                shutil.rmtree(p, ignore_errors=True)
        keep = checkpointed[-1] if self.resume and checkpointed else None
        for p in checkpointed:
            if p is keep:
                continue
            if self.force or self.resume:
                shutil.rmtree(p, ignore_errors=True)
                self.notice(f"discarded the checkpoint of an unfinished run in {str(p)!r}")
            else:
                raise OutputExistsError(f"{str(p)!r} holds the checkpoint of an unfinished run into "
                                        f"{str(self.out)!r}; pass --resume to continue it, or --force to discard it")
        return keep


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    return ""


@contextlib.contextmanager
def staged_output(out: str | Path, force: bool) -> Iterator[Path]:
    """Yields a staging directory (under the output's lock); on success it replaces ``out``, on error it is
    deleted."""
    with OutputDir(out, force) as target:
        try:
            yield target.stage
        except BaseException:
            target.abandon()
            raise
        target.commit()


def _is_ours(out: Path) -> bool:
    """The marker, or the report.json + recipe.yaml pair of an output written before markers existed."""
    return (out / MARKER).is_file() or ((out / "report.json").is_file() and (out / "recipe.yaml").is_file())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
