"""The study's stages and their bookkeeping: a :class:`Stage` is a plain record of one unit of work (its kind,
configuration, inputs and the arguments of its kind's builder, :func:`volgan.study.build.build_stage`) with a hash of
its content; :class:`Manifest` records the finished ones in ``OUT/manifest.json``; :class:`Progress` prints one line
a stage with an estimate of what is left; :func:`run_bundle` runs a MONAI bundle (``python -m monai.bundle run``) for
a stage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volgan.bundle_runs import bundles_root
from volgan.data.files import write_text
from volgan.errors import VolganInputError
from volgan.study.profiles import StudyProfile

MANIFEST = "manifest.json"
TRAINED_ON = "trained_on.json"  # beside a spine_segcls run: the cases it trained on


def bundle_version(bundle: str) -> str:
    """The ``version`` of ``bundles/<bundle>/configs/metadata.json``: part of every stage that runs the bundle, so
    a new training recipe retrains what it trained.

    Parameters
    ----------
    bundle : str
        ``"spine_segcls"`` or ``"spine_cgan"``.

    Returns
    -------
    str
        the version, such as ``"0.4.0"``.
    """
    meta = bundles_root() / bundle / "configs" / "metadata.json"
    return str(json.loads(meta.read_text(encoding="utf-8"))["version"])


def digest(value) -> str:
    """The SHA-256 of a value's JSON text (keys sorted; what JSON cannot hold written as ``str``), as 64 hex digits.

    Parameters
    ----------
    value : object
        any JSON-able value.

    Returns
    -------
    str
        the digest.
    """
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()

# --------------------------------------------------------------------------------------------------------
# Stages and the manifest


@dataclass
class StudySettings:
    """What the user chose: where, which profile (seeds included), whose data. With a :class:`Stage` it is all a
    worker, local or remote, needs to build the stage."""

    out: Path
    profile: StudyProfile
    real: Path | None = None
    real_check: Path | None = None  # a datalist of the user's real scans for the real-MRI check, beside data/real


@dataclass
class Stage:
    """One unit of work as plain data: the builder of its ``kind`` (:data:`volgan.study.build.BUILDERS`) fills a
    fresh folder from ``args`` (picklable values) and the study's settings; ``config``, the hashes of ``deps`` and
    the code that runs it (:func:`code_digest`) decide its hash."""

    key: str
    kind: str
    label: str
    config: dict
    deps: tuple[str, ...]
    args: dict = field(default_factory=dict)
    cost: float = 0.0                   # expected work (:func:`volgan.study.plan.stage_cost`), to order the stages
    hash: str = ""


class Manifest:
    """``OUT/manifest.json``: every finished stage with its hash, seconds and what it was for."""

    def __init__(self, out: Path):
        self.path = out / MANIFEST
        self.stages: dict[str, dict] = {}
        if self.path.is_file():
            try:
                self.stages = json.loads(self.path.read_text(encoding="utf-8"))["stages"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise VolganInputError(self.path, f"unreadable study manifest ({exc}); remove it to start over") \
                    from None

    def finished(self, stage: Stage, folder: Path) -> bool:
        entry = self.stages.get(stage.key)
        return bool(entry) and entry.get("hash") == stage.hash and folder.is_dir()

    def record(self, stage: Stage, seconds: float, where: dict | None = None) -> None:
        """Record ``stage`` as finished in ``seconds``; ``where`` says where a worker built it (host, Ray node, GPUs,
        start and end)."""
        self.stages[stage.key] = {"hash": stage.hash, "kind": stage.kind, "label": stage.label,
                                  "seconds": round(seconds, 2), "deps": list(stage.deps),
                                  **({"built_on": where} if where else {})}
        self.save()

    def save(self) -> None:
        write_text(self.path, json.dumps({"version": 1, "stages": self.stages}, indent=1) + "\n")


# The bundles whose configuration files each kind of stage runs (every kind runs volgan's own code)
BUNDLES_RUN = {"gan": ("spine_cgan",), "synth": ("spine_cgan",), "run": ("spine_segcls",),
               "eval": ("spine_segcls",), "real": ("spine_segcls",), "quality": ("spine_cgan", "spine_segcls")}


@functools.cache
def _files_digest(folder: Path, pattern: str) -> str:
    digest_ = hashlib.sha256()
    for path in sorted(folder.rglob(pattern)):
        if "__pycache__" not in path.parts:
            digest_.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest_.hexdigest()


def code_digest(kind: str) -> str:
    """What runs a stage of ``kind``, as content: the SHA-256 of volgan's version and every source file of the package,
    and of the configuration files of the bundles the kind runs (:data:`BUNDLES_RUN`). Any change to that code or
    those configurations rebuilds the stages it runs; nothing depends on a version string bumped by hand.

    Parameters
    ----------
    kind : str
        the stage kind (``"data"``, ``"gan"``, ``"synth"``, ``"run"``, ``"eval"``, ``"real"``, ``"quality"``,
        ``"report"``).

    Returns
    -------
    str
        64 hex digits.
    """
    import volgan

    package = Path(volgan.__file__).resolve().parent
    parts = [volgan.__version__, _files_digest(package, "*.py")]
    parts += [_files_digest(bundles_root() / bundle / "configs", "*.json") for bundle in BUNDLES_RUN.get(kind, ())]
    return digest(parts)


def critical_first(stages: list[Stage]) -> list[Stage]:
    """The stages by the expected work on their longest path to the study's end (their own ``cost`` and that of the
    costliest chain of stages waiting on them), highest first; ties keep the plan's order. Started in this order as
    their inputs are done, the long chains (GAN → synthesis → the runs on its volumes) begin first and the study
    ends sooner on many workers (scripts/bench_paper_profile.py, "On several GPUs").

    Parameters
    ----------
    stages : list[Stage]
        the stages, dependencies first.

    Returns
    -------
    list[Stage]
        the same stages, reordered.
    """
    waiting: dict[str, list[str]] = {}
    for stage in stages:
        for dep in stage.deps:
            waiting.setdefault(dep, []).append(stage.key)
    chain: dict[str, float] = {}
    for stage in reversed(stages):
        chain[stage.key] = stage.cost + max((chain[k] for k in waiting.get(stage.key, ())), default=0.0)
    return sorted(stages, key=lambda s: -chain[s.key])


def hash_plan(stages: list[Stage]) -> None:
    """Set each stage's hash from its kind, configuration, its dependencies' hashes and the code that runs it
    (:func:`code_digest`), so that a change anywhere upstream changes every stage below it.

    Parameters
    ----------
    stages : list[Stage]
        the stages, dependencies first.
    """
    known: dict[str, str] = {}
    for stage in stages:
        stage.hash = digest({"kind": stage.kind, "config": stage.config, "deps": [known[d] for d in stage.deps],
                             "code": code_digest(stage.kind)})
        known[stage.key] = stage.hash


class Progress:
    """One line per stage with a bar for training, and an estimate of what is left."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.seconds: dict[str, list[float]] = {}
        self.left: dict[str, str] = {}
        self.total: int | None = None  # unknown until the data are there to plan with
        self.jobs = 1

    def plan(self, stages: list[Stage], finished: int = 0, complete: bool = True, jobs: int = 1) -> None:
        """The stages still to come (``finished`` already run); ``complete=False`` while more will be planned;
        ``jobs`` stages of :data:`PARALLEL_KINDS` are built at a time."""
        self.total = finished + len(stages) if complete else None
        self.left = {s.key: s.kind for s in stages}
        self.jobs = jobs

    def _estimate(self) -> str:
        known = {k: float(np.mean(v)) for k, v in self.seconds.items()}
        unknown = sum(1 for kind in self.left.values() if kind not in known)
        est = sum(known.get(kind, 0.0) / (self.jobs if kind in PARALLEL_KINDS else 1) for kind in self.left.values())
        if not est:
            return "time estimated once a stage of each kind has run"
        return f"~{est / 60:.1f} min" + (f" + {unknown} stage(s) of a kind not yet timed" if unknown else "")

    def start(self, index: int, stage: Stage, cached: bool) -> None:
        if not self.quiet:
            state = "kept (finished before)" if cached else "running"
            print(f"[{index}/{self.total or '?'}] {stage.label}: {state}", file=sys.stderr, flush=True)

    def done(self, stage: Stage, seconds: float, cached: bool) -> None:
        self.left.pop(stage.key, None)
        if not cached:
            self.seconds.setdefault(stage.kind, []).append(seconds)
        if not self.quiet and not cached:
            left = ("planning the other stages" if not self.total else "nothing left" if not self.left
                    else f"{len(self.left)} stage(s) left, {self._estimate()}")
            which = f" ({stage.label})" if self.jobs > 1 else ""  # lines of stages built side by side interleave
            print(f"    done in {seconds:.0f} s{which}; {left}", file=sys.stderr, flush=True)

    def bar(self, total: int, desc: str):
        """A tqdm bar over ``total`` epochs, drawn only on a terminal (in a log file its carriage-return redraws
        would pile up; the stage lines are the progress there)."""
        from tqdm import tqdm

        return tqdm(total=total, desc=f"    {desc}", unit="epoch", leave=False, file=sys.stderr,
                    disable=self.quiet or not sys.stderr.isatty())

# --------------------------------------------------------------------------------------------------------
# Bundles, in-process


def _logging_conf(folder: Path) -> Path:
    """A logging.conf sending the bundle's log to ``folder/train.log`` (the console keeps the study's bars)."""
    log = str((folder / "train.log").resolve()).replace("\\", "/")
    text = ("[loggers]\nkeys=root\n\n[handlers]\nkeys=file\n\n[formatters]\nkeys=plain\n\n"
            "[logger_root]\nlevel=INFO\nhandlers=file\n\n"
            f"[handler_file]\nclass=FileHandler\nlevel=INFO\nformatter=plain\nargs=({log!r}, 'a', 'utf-8')\n\n"
            "[formatter_plain]\nformat=%(asctime)s %(name)s %(levelname)s %(message)s\n")
    return write_text(folder / "logging.conf", text)


def run_bundle(bundle: str, folder: Path, overrides: dict, bar=None) -> None:
    """Run ``bundles/<bundle>/configs/train.json`` in this process with ``overrides`` (bundle_root = folder).
    Its log goes to ``folder/train.log``; ``bar`` (tqdm) advances once per epoch. For spine_segcls the cases the
    bundle trained on (its own ``split``) are written to ``folder/trained_on.json`` as {"name", "source"}.

    Parameters
    ----------
    bundle : str
        ``"spine_segcls"`` or ``"spine_cgan"``.
    folder : Path
        the bundle root of the run.
    overrides : dict
        the command-line overrides (name → value).
    bar : tqdm.tqdm | None
        the progress bar, or None.
    """
    import logging

    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    root = bundles_root() / bundle
    log_file = logging.FileHandler(folder / "train.log", encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    saved: dict[logging.Logger, list] = {}

    def redirect_logs() -> None:  # MONAI and Ignite loggers print to the console themselves
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            if isinstance(logger, logging.Logger) and logger.handlers and logger not in saved:
                saved[logger] = logger.handlers
                logger.handlers = [log_file]

    redirect_logs()
    workflow = ConfigWorkflow(config_file=str(root / "configs" / "train.json"),
                              meta_file=str(root / "configs" / "metadata.json"),
                              logging_file=str(_logging_conf(folder)), workflow_type="train",
                              bundle_root=str(folder), progress=False, **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")  # builds the engines and their loggers
    redirect_logs()
    if bar is not None:
        trainer.add_event_handler(Events.STARTED, lambda e: (bar.reset(total=e.state.max_epochs),
                                                             bar.update(e.state.epoch)))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: bar.update(1))
    if bundle == "spine_segcls":
        trained = [{"name": c.name, "source": c.source} for c in workflow.parser.get_parsed_content("split")[0]]
        write_text(folder / TRAINED_ON, json.dumps(trained, indent=1) + "\n")
    try:
        workflow.run()
    finally:
        workflow.finalize()
        for logger, handlers in saved.items():
            logger.handlers = handlers
        log_file.close()
        for handler in list(logging.getLogger().handlers):  # close train.log before the folder is renamed
            if isinstance(handler, logging.FileHandler):
                handler.close()
                logging.getLogger().removeHandler(handler)

PARALLEL_KINDS = ("gan", "synth", "run", "eval", "real", "quality")  # stages a worker may build beside another
