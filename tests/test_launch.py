"""effnet-tl launch / effnet_tl.launch.launch_local with real processes (no TensorFlow in them)."""

import json
import subprocess
import sys
import time

import pytest

from effnet_tl.launch import free_ports, launch_local

REPORT = ("import json, os, sys; from pathlib import Path; "
          "config = json.loads(os.environ['TF_CONFIG']); "
          "Path(sys.argv[1], str(config['task']['index'])).write_text(os.environ['TF_CONFIG'])")


def test_each_worker_gets_its_own_tf_config(tmp_path):
    status = launch_local([sys.executable, "-c", REPORT, str(tmp_path)], 3,
                          log_dir=tmp_path / "logs")
    assert status == 0
    configs = [json.loads((tmp_path / str(i)).read_text()) for i in range(3)]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("localhost:") for a in addresses)
    assert [c["task"] for c in configs] == [{"type": "worker", "index": i} for i in range(3)]
    assert all(c["cluster"] == configs[0]["cluster"] for c in configs)


def test_a_failing_worker_fails_the_launch_and_the_rest_are_stopped(tmp_path, capsys):
    # Worker 1 fails at once; worker 0 would sleep for a minute: it is stopped after grace.
    script = ("import json, os, sys, time; "
              "i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
              "print('worker', i, 'says hello'); sys.stdout.flush(); "
              "sys.exit(7) if i else time.sleep(60)")
    started = time.monotonic()
    status = launch_local([sys.executable, "-c", script], 2, log_dir=tmp_path, grace=1.0)
    assert status == 7 and time.monotonic() - started < 30
    assert "worker 1 says hello" in (tmp_path / "worker1.log").read_text()
    assert f"worker 1 exited with status 7; its output: {tmp_path / 'worker1.log'}" in \
        capsys.readouterr().err


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="workers=0"):
        launch_local(["true"], 0)
    with pytest.raises(ValueError, match="cannot start 'no-such-program-here'"):
        launch_local(["no-such-program-here"], 2)
    assert len(set(free_ports(4))) == 4


def test_a_worker_killed_by_a_signal_is_reported_as_a_shell_would(tmp_path, capsys):
    script = ("import json, os, signal, time; "
              "i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
              "os.kill(os.getpid(), signal.SIGKILL) if i else time.sleep(0.5)")
    assert launch_local([sys.executable, "-c", script], 2, log_dir=tmp_path) == 128 + 9
    assert "worker 1 was killed by signal 9 (SIGKILL)" in capsys.readouterr().err


def test_the_default_log_folder_is_removed_after_success(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert launch_local([sys.executable, "-c", "print('hi')"], 2) == 0
    assert not list(tmp_path.glob("effnet_tl-launch-*"))
    assert "(removed if all succeed)" in capsys.readouterr().err


def test_cli_launch_runs_effnet_tl_subcommands_and_refuses_no_command(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "effnet_tl.cli", "launch", "--workers", "2", "--log-dir",
         str(tmp_path), "variants", "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "usage: effnet-tl variants" in completed.stdout
    assert "usage: effnet-tl variants" in (tmp_path / "worker1.log").read_text()
    empty = subprocess.run([sys.executable, "-m", "effnet_tl.cli", "launch"],
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2
    assert empty.stderr.strip().splitlines()[-1] == (
        "effnet-tl: error: launch needs a command after its options, e.g. "
        "'effnet-tl launch --workers 2 fit data/flowers --num-classes 5'")


def test_launch_from_the_folder_above_a_clone_runs_the_installed_package(tmp_path):
    # The parent folder of a git clone holds another effnet_tl/; `python -m` in the workers
    # would import it (the current folder comes first on the import path).
    from pathlib import Path

    script = Path(sys.executable).with_name("effnet-tl")
    if not script.exists():
        pytest.skip("no effnet-tl entry point next to this Python")
    (tmp_path / "effnet_tl").mkdir()
    (tmp_path / "effnet_tl" / "__init__.py").write_text("raise ImportError('the wrong one')\n")
    completed = subprocess.run(
        [str(script), "launch", "--workers", "2", "--log-dir", str(tmp_path / "logs"),
         "variants", "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "usage: effnet-tl variants" in completed.stdout
