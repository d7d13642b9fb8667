"""Faults around a run, tried as a hostile new user would: two runs into one --out, what killed runs leave,
a final move that fails, Ctrl-C and SIGTERM, settings that would fail only after the whole run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from prunekit.cli.main import main
from prunekit.io.checkpoint import canonical_safetensors, save_state_dict
from prunekit.io.outdir import CHECKPOINT_DIR, MARKER, OutputDir
from tests._stop_at import wait_stopped

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "name": "tiny", "seed": 1, "model": "lenet300", "data": "digits",
    "train": {"epochs": 1, "lr": 0.05}, "recover": {"epochs": 1, "lr": 0.01},
    "prune": {"method": "iterative", "importance": "l1", "allocation": "global", "sparsity": 0.5, "steps": 1},
    "measure": {"latency_batches": [1], "latency_repeats": 1},
}
STRUCTURED = {
    "name": "tiny-structured", "seed": 0, "model": "resnet_mini", "data": "digits",
    "train": {"epochs": 1, "lr": 0.05}, "recover": {"epochs": 1, "lr": 0.01},
    "prune": {"method": "structured", "importance": "l1", "budget": {"macs_kept": 0.6}},
    "measure": {"latency_batches": [1], "latency_repeats": 1},
}


def _recipe(tmp_path, patch=None, base=TINY):
    raw = json.loads(json.dumps(base))
    for k, v in (patch or {}).items():
        raw[k] = {**raw[k], **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _assert_fails(argv, capsys, match, code=2):
    t = time.perf_counter()
    got = main(argv)
    err = capsys.readouterr().err.strip()
    assert got == code, err
    assert len(err.splitlines()) == 1 and match in err, err
    return time.perf_counter() - t


def _read_all(paths):
    try:
        return "".join(p.read_text() for p in paths)
    except OSError:
        return ""


def _hidden(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out"))


def test_a_second_run_into_the_same_out_is_refused_at_once(tmp_path, capsys):
    out = tmp_path / "out"
    with OutputDir(out):  # a run in progress holds the lock
        took = _assert_fails(["run", _recipe(tmp_path), "--out", str(out), "--no-progress"], capsys,
                      f"another prunekit run (pid {os.getpid()}")
    assert took < 5  # refused before data, model or training
    assert not out.exists()
    assert main(["run", _recipe(tmp_path), "--out", str(out), "--no-progress"]) == 0  # the lock went with it
    assert _hidden(tmp_path) == []  # no lock file, no staging directory left


def test_stale_staging_directories_are_cleaned_or_reported(tmp_path, capsys):
    out = tmp_path / "out"
    killed = tmp_path / ".out.staging-killed01"
    (killed / "sub").mkdir(parents=True)
    (killed / "model.safetensors").write_bytes(b"half")
    complete = tmp_path / ".out.staging-moved001"
    complete.mkdir()
    (complete / MARKER).write_text("")
    (complete / "report.json").write_text("{}")
    assert main(["run", _recipe(tmp_path), "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"removed '{killed}'" in err and not killed.exists()
    assert f"'{complete}' holds the complete results of an earlier run whose final move failed" in err
    assert (complete / "report.json").read_text() == "{}"  # never deleted: results
    assert (out / "report.json").is_file()


def test_a_checkpoint_left_behind_needs_resume_or_force(tmp_path, capsys):
    out = tmp_path / "out"
    stale = tmp_path / ".out.staging-ckpt0001"
    (stale / CHECKPOINT_DIR).mkdir(parents=True)
    _assert_fails(["run", _recipe(tmp_path), "--out", str(out), "--no-progress"], capsys,
           "holds the checkpoint of an unfinished run")
    assert stale.is_dir()
    _assert_fails(["run", _recipe(tmp_path), "--out", str(out), "--no-progress", "--resume"], capsys,
           "holds no run state")  # a checkpoint folder without a checkpoint in it
    assert stale.is_dir()


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    _assert_fails(["run", _recipe(tmp_path), "--out", str(tmp_path / "out"), "--resume"], capsys,
           "--resume: no checkpoint of an unfinished run into")


def test_a_failed_final_move_says_where_the_results_are(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real = Path.rename

    def refuse(self, target):
        if Path(target) == out:
            raise PermissionError(13, "Permission denied")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", refuse)
    _assert_fails(["run", _recipe(tmp_path), "--out", str(out), "--no-progress"], capsys,
           "could not move the results into")
    (stage,) = [tmp_path / n for n in _hidden(tmp_path)]
    assert (stage / "report.json").is_file() and (stage / MARKER).is_file()
    assert not out.exists()


@pytest.mark.parametrize("patch,match", [
    ({"prune": {"allocation": "ratios", "ratios": {"fc9.*": 0.5}}}, "recipe.prune.ratios: pattern 'fc9.*' matches no"),
    ({"measure": {"latency_batches": [1, 10**9]}}, "recipe.measure.latency_batches: batch 1000000000 needs about"),
])
def test_settings_that_would_fail_late_fail_before_training(tmp_path, capsys, patch, match):
    argv = ["run", _recipe(tmp_path, patch), "--out", str(tmp_path / "out"), "--no-progress"]
    took = _assert_fails(argv, capsys, match)
    assert took < 8  # no training happened
    assert _hidden(tmp_path) == []


def test_structured_exclude_names_are_checked_before_training(tmp_path, capsys):
    recipe = _recipe(tmp_path, {"prune": {"exclude": ["layer9"]}}, base=STRUCTURED)
    _assert_fails(["run", recipe, "--out", str(tmp_path / "out"), "--no-progress"], capsys,
           "recipe.prune.exclude: the model has no module named 'layer9'")


@pytest.mark.parametrize("name,match", [("x" * 250, "its staging directory's name would exceed"),
                                        ("..", "names no directory of its own")])
def test_output_names_that_cannot_work_are_refused_first(tmp_path, capsys, name, match):
    _assert_fails(["run", _recipe(tmp_path), "--out", str(tmp_path / name), "--no-progress"], capsys, match)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_output_parent_is_refused_first(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _assert_fails(["run", _recipe(tmp_path), "--out", str(ro / "out"), "--no-progress"], capsys,
               "choose a --out in a writable directory")
    finally:
        ro.chmod(0o755)


def _default_sigint() -> None:
    """A child's SIGINT as a terminal gives it: a runner that starts the suite in the background (``cmd &``,
    nohup) passes SIGINT on as ignored, and Python then installs no handler of its own."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "prunekit.cli.main", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def test_ctrl_c_while_torch_loads_stops_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    start = "import sys, prunekit.cli.main as m; print('loaded', flush=True); sys.exit(m.main())"  # the console script
    proc = subprocess.Popen([sys.executable, "-c", start, "run", _recipe(tmp_path), "--out", "out", "--no-progress"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    assert proc.stdout.readline() == "loaded\n"
    time.sleep(0.5)  # inside main(), which loads torch (seconds)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "prunekit: stopped by SIGINT; nothing was written\n", err
    assert _hidden(tmp_path) == [] and not (tmp_path / "out").exists()


KICK = """
import os, signal, sys

class Kick:  # sends SIGINT to this process when the command starts to import the module named below
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["KICK_AT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, Kick())
"""


@pytest.mark.parametrize("module", ["prunekit.errors", "prunekit.cli.main", "prunekit.pipeline"])
@pytest.mark.parametrize("how", [["-m", "prunekit"], ["-m", "prunekit.cli.main"]])
def test_ctrl_c_while_the_command_imports_prunekit_stops_with_one_line(tmp_path, module, how):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(KICK)  # runs before the command's first line
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)]), "KICK_AT": module,
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *how, "run", _recipe(tmp_path), "--out", "out", "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          preexec_fn=_default_sigint)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "prunekit: stopped by SIGINT; nothing was written\n", proc.stderr
    assert _hidden(tmp_path) == [] and not (tmp_path / "out").exists()


def test_importing_prunekit_elsewhere_leaves_signals_alone():
    code = "import signal, prunekit; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60, preexec_fn=_default_sigint)
    assert proc.stdout.strip() == "True", proc.stderr


def test_sigterm_stops_with_one_line_that_says_how_to_resume(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path, {"train": {"epochs": 30}})
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "PRUNEKIT_TEST_STOP_AT": 's["current"] is not None'}  # stops itself after the first epoch's checkpoint
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "_stop_at.py"), "run", recipe, "--out", "out",
                             "--no-progress", "--threads", "1"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    assert wait_stopped(proc.pid), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)  # the signal arrives at the checkpoint's last line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    (stage,) = tmp_path.glob(".out.staging-*")
    resume = f"; continue with: prunekit run {recipe} --out out --no-progress --threads 1 --resume"
    assert err == f"prunekit: stopped by SIGTERM; its checkpoint is in '{stage.name}'; 'out' is untouched{resume}\n"
    monkeypatch.chdir(tmp_path)
    assert main(err.strip().split("continue with: prunekit ")[1].split()) == 0  # the command it gave works
    assert json.loads((tmp_path / "out" / "report.json").read_text())["checkpoint"]["resumed"] is True


def test_saved_safetensors_have_sorted_headers_and_same_bytes(tmp_path):
    state = {f"layer{i}.weight": torch.full((2,), float(i)) for i in (3, 1, 2)}
    save_state_dict(state, tmp_path / "a.safetensors", {"z": 1, "a": 2, "m": [3]})
    raw = (tmp_path / "a.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0
    header = raw[8:8 + n].decode().rstrip()
    assert header == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":"))
    assert canonical_safetensors(raw) == raw
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["prunekit"]) == {"a": 2, "m": [3], "z": 1}
        assert torch.equal(f.get_tensor("layer3.weight"), torch.full((2,), 3.0))


def test_same_seed_gives_byte_identical_structured_files(tmp_path):
    outs = [tmp_path / f"out{i}" for i in range(2)]
    for out in outs:
        assert main(["run", _recipe(tmp_path, base=STRUCTURED), "--out", str(out), "--no-progress",
                     "--threads", "1"]) == 0
    for name in ("model.safetensors", "pruned.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_an_output_under_a_file_is_refused_first(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    _assert_fails(["run", _recipe(tmp_path), "--out", str(tmp_path / "notes.txt" / "out"), "--no-progress"], capsys,
           "cannot create the output's parent")
