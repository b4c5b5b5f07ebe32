"""Ctrl-C in any `vpr-ros` command: one line on stderr and exit code 130, no traceback."""
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from vpr_ros import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_ends_on_ctrl_c_with_one_line(command, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    fake = types.SimpleNamespace(add_arguments=lambda parser: None, run=interrupted)
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: fake)
    assert cli.main([command]) == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert err == f"vpr-ros {command}: interrupted\n"


def test_a_real_sigint_during_the_demo_prints_one_line(tmp_path):
    # a shell's background job starts with SIGINT ignored, and Python then keeps it ignored:
    # give the demo the default disposition, as a terminal would
    process = subprocess.Popen(
        [sys.executable, "-m", "vpr_ros.cli", "demo", "--out", str(tmp_path / "demo")],
        cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = process.stderr.readline()          # the demo logs as soon as it starts working
        assert first, "the demo printed nothing"
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=60) == cli.EXIT_INTERRUPTED, first + rest
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in rest
    assert rest.strip().splitlines()[-1] == "vpr-ros demo: interrupted"
