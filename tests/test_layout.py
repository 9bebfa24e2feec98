"""The package's layout: one sub-package per stage of the data flow, and no import cycles."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import volgan

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODULES = {"__init__", "__main__", "errors", "labels", "training", "bundle_runs"}
FRONT_ENDS = {"cli"}  # the command line: a package of its own, one module per group of commands, not a stage


def _check_imports():
    spec = importlib.util.spec_from_file_location("check_imports", ROOT / "scripts" / "check_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles_counting_imports_inside_functions():
    checker = _check_imports()
    graph = checker.import_graph()
    assert "volgan.segcls.inference" in graph and "volgan.study.run" in graph
    assert checker.cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    checker = _check_imports()
    package = tmp_path / "volgan"
    (package / "stage").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "stage" / "__init__.py").write_text("")
    (package / "stage" / "a.py").write_text("from volgan.stage.b import thing\n")
    (package / "stage" / "b.py").write_text("def thing():\n    from volgan.stage import a\n    return a\n")
    assert checker.cycles(checker.import_graph(package)) == [["volgan.stage.a", "volgan.stage.b"]]


def test_every_stage_is_a_sub_package_and_nothing_else_sits_flat():
    flat = {p.stem for p in (ROOT / "volgan").glob("*.py")}
    assert flat == SHARED_MODULES
    for name in volgan.SUBPACKAGES:
        assert (ROOT / "volgan" / name / "__init__.py").is_file()
        assert importlib.import_module(f"volgan.{name}").__doc__
    packages = {p.parent.name for p in (ROOT / "volgan").glob("*/__init__.py")}
    assert packages == set(volgan.SUBPACKAGES) | FRONT_ENDS


def test_ignite_progress_bar_resolves_on_the_installed_ignite():
    """ignite 0.4.11 (MONAI 1.4's pin, the declared lower bound) keeps ProgressBar in ignite.contrib.handlers."""
    from ignite.engine import Engine

    from volgan.training import ignite_progress_bar

    bar = ignite_progress_bar()(persist=False)
    bar.attach(Engine(lambda engine, batch: {"loss": 0.0}), output_transform=lambda out: {"loss": out["loss"]})


def test_every_public_function_documents_its_parameters_and_result(tmp_path, monkeypatch):
    script = ROOT / "scripts" / "check_docstrings.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    spec = importlib.util.spec_from_file_location("check_docstrings", script)
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    (tmp_path / "gap.py").write_text('def scale(x: float) -> float:\n    """Twice x."""\n    return 2 * x\n',
                                     encoding="utf-8")
    monkeypatch.setattr(checker, "PACKAGE", tmp_path)
    monkeypatch.setattr(sys, "argv", ["check_docstrings.py"])
    assert checker.main() == 1  # a gap fails the check
