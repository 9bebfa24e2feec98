"""Shared fixtures: small phantom datasets made once per session, a CLI runner, and the tiny study."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import STUDY, manifest, run

from volgan.cli import main
from volgan.data.phantom import PhantomConfig, make_dataset

SMALL = PhantomConfig(size=(32, 32, 32))


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """12 cases of 32³ (3 of each class), MSD layout, seed 7."""
    out = tmp_path_factory.mktemp("phantom") / "data"
    make_dataset(out, 12, SMALL, seed=7, test_fraction=0.34)
    return out


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def cli(capsys):
    """Run ``volgan ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """A tiny study killed once mid-way and resumed to the end."""
    out = tmp_path_factory.mktemp("study") / "run"
    proc = subprocess.Popen([*STUDY, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "manifest.json").is_file() and len(manifest(out)) >= 8:
                break
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = manifest(out)
    assert len(before) >= 8, "the study did not get far enough before the kill"
    assert not (out / "report.html").exists()
    result = run("--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    kept = result.stderr.count("kept (finished before)")
    assert kept >= len(before) - 1, result.stderr[:3000]  # the data stage's line counts among them
    for key, entry in before.items():
        assert manifest(out)[key]["hash"] == entry["hash"]
    assert str(out / "report.html") in result.stdout
    return out
