"""Shared fixtures: small phantom datasets made once per session, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest

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
