"""The study (docs/design.md, "Study protocol"): the ratio sweep and the augmentation comparison in one command.

``run_study(out, profile)`` builds a plan of stages and runs the ones whose configuration changed. Each
stage writes into ``OUT/stages/<key>`` (built in a hidden ``.partial`` folder, renamed when finished) and
is recorded in ``OUT/manifest.json`` with the hash of its configuration and of every stage it reads, so an
interrupted study picks up at the first unfinished stage (which starts afresh, a GAN too: its attempt may go on
another worker or node, with other arithmetic, :func:`volgan.study.executors.build_task`) and a changed setting
recomputes only what depends on it.

Stages, in order: ``data`` (phantoms or the user's datalist: a real training pool and a fixed test set
with equal counts per ``tumor_type``) → ``gan-N`` (bundles/spine_cgan trained on the first N cases of the
real pool only, one GAN per real-pool size) → ``synth-N`` (its synthetic pool) → ``run-*`` (bundles/
spine_segcls trained on one arm and seed) → ``eval-*`` (that model on the real test set, clean, and for the
augmentation comparison's arms also at three artifact severities) → ``quality`` (``volgan quality`` of the
full pool's synthetic data) → ``report`` (:mod:`volgan.study.report`).

Every segmenter-classifier trains on exactly its arm's cases (the bundle holds none out: ``val_fraction`` 0,
its batches keep the arm's real:synthetic ratio, and the stage keeps the list as ``trained_on.json``), sees the
same number of training-volume presentations (epochs = presentations / training volumes), so arms with more
volumes do not get more optimisation steps, and is evaluated as it is after its last epoch: the bundle's own
``models/model_final.pt``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from volgan.bundle_runs import bundles_root
from volgan.data.datalist import read_datalist
from volgan.data.files import atomic_path, write_text
from volgan.errors import VolganInputError
from volgan.study.build import build_stage
from volgan.study.data import adapt_profile, slice_axis_note, split_user_data
from volgan.study.executors import empty_folder
from volgan.study.plan import base_stages, plan_study
from volgan.study.profiles import PROFILES, StudyProfile
from volgan.study.stages import (
    MANIFEST,
    PARALLEL_KINDS,
    Manifest,
    Progress,
    Stage,
    StudySettings,
    critical_first,
    hash_plan,
)

REPORT_FILES = ("study.json", "study.csv", "report.md", "report.html")


def default_jobs() -> int:
    """Stages built at a time on a machine without a GPU: 2 when there are two or more CPU cores, each worker on its
    share of the cores. On 2 cores two spine_segcls runs of one thread each train 1.8× as many volumes a second as
    one run of two threads (BENCHMARKS.md, "Study stages side by side"). With GPUs the local executor runs one stage
    per GPU (or ``1 / gpu_share`` per GPU) instead.

    Returns
    -------
    int
        the number of stages built at a time.
    """
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _partial_folder(stage: Stage, out: Path) -> Path:
    """The folder the stage is built in (hidden; every attempt starts it afresh)."""
    return out / "stages" / f".{stage.key}.{stage.hash[:12]}.partial"


def _finish_stage(stage: Stage, out: Path, partial: Path, seconds: float, manifest: Manifest,
                  progress: Progress, where: dict | None = None) -> None:
    folder = out / "stages" / stage.key
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    manifest.record(stage, seconds, where)
    progress.done(stage, seconds, False)


def _run_stages(stages: list[Stage], first: int, settings: StudySettings, manifest: Manifest, progress: Progress,
                executor=None) -> None:
    """Build every stage not finished before, each once all it reads is there. With an ``executor``
    (:mod:`volgan.study.executors`) the stages of :data:`PARALLEL_KINDS` are built by its workers, as many at a time
    as it has slots; the others run here, alone. Ready stages start in :func:`critical_first` order; each keeps its
    number in the plan."""
    out = settings.out
    planned = {s.key for s in stages}
    done = {key for key in manifest.stages if key not in planned and (out / "stages" / key).is_dir()}  # base stages
    pending = list(enumerate(stages, start=first))
    order = {s.key: i for i, s in enumerate(critical_first(stages))}
    pending.sort(key=lambda item: order[item[1].key])
    running: dict[str, tuple[Stage, Path]] = {}
    try:
        while pending or running:
            launched = True
            while launched:
                launched = False
                for item in pending:
                    index, stage = item
                    if any(dep not in done for dep in stage.deps):
                        continue
                    if manifest.finished(stage, out / "stages" / stage.key):
                        progress.start(index, stage, True)
                        progress.done(stage, 0.0, True)
                        done.add(stage.key)
                    elif executor is not None and stage.kind in PARALLEL_KINDS:
                        if len(running) >= executor.slots:
                            continue
                        progress.start(index, stage, False)
                        partial = _partial_folder(stage, out)
                        running[stage.key] = (stage, partial)
                        executor.submit(stage, settings, partial)
                    elif not running:
                        progress.start(index, stage, False)
                        partial = _partial_folder(stage, out)
                        empty_folder(partial)
                        start = time.perf_counter()
                        build_stage(stage, partial, settings, progress)
                        _finish_stage(stage, out, partial, time.perf_counter() - start, manifest, progress)
                        done.add(stage.key)
                    else:
                        continue
                    pending.remove(item)
                    launched = True
                    break
            if running:
                key, status, value, where = executor.wait()
                stage, partial = running.pop(key)
                if status == "error":
                    raise value
                _finish_stage(stage, out, partial, value, manifest, progress, where)
                done.add(key)
            elif pending:
                raise RuntimeError(f"study plan: {pending[0][1].key} waits on a stage that is never built")
    except BaseException:
        if executor is not None:  # stages in flight stay as .partial folders, rebuilt afresh next time
            try:
                executor.stop()
            except Exception as exc:  # the first error (or the Ctrl-C) is the one to report, not this one
                print(f"volgan study: stopping the workers failed too: {type(exc).__name__}: {exc}".splitlines()[0],
                      file=sys.stderr)
        raise


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise VolganInputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise VolganInputError(out, "is a non-empty folder that holds no study (no manifest.json); "
                                    "give a new or empty folder, or a study's folder to resume")


def _publish(out: Path) -> None:
    """Copy the report stage's files to ``OUT`` (each replaced atomically) and its figures to ``OUT/figures``."""
    source = out / "stages" / "report"
    for name in REPORT_FILES:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(source / name, tmp)
    figures = out / "figures"
    staging = out / ".figures.partial"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(source / "figures", staging)
    if figures.exists():
        shutil.rmtree(figures)
    os.replace(staging, figures)


def _prune(out: Path, keep: set[str], manifest: Manifest) -> None:
    """Remove stage folders and manifest entries the current plan no longer names."""
    for path in (out / "stages").iterdir():
        if path.name not in keep:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    manifest.stages = {k: v for k, v in manifest.stages.items() if k in keep}
    manifest.save()


def _field_size(size: int | tuple[int, ...], profile: StudyProfile) -> int | tuple[int, int, int]:
    """The study field for ``--size``: one side (a cube, kept a number so that a cube's stages keep their keys) or
    three, refused in one line unless the GAN builds it (:func:`volgan.gan.networks.grid_shape`), every side is at
    least 16 voxels for the smallest (the GAN's grid) and a multiple of the segmenter's divisor (2 per level below
    the top of the profile's widths)."""
    from volgan.gan.networks import grid_shape

    sides = (size,) * 3 if isinstance(size, int) else tuple(size)
    divisor = 2 ** (len(profile.channels) - 1)
    side = sides[0]
    if len(set(sides)) == 1 and (side < 16 or side & (side - 1)):
        raise VolganInputError(None, f"--size must be a power of two, 16 or more (the GAN doubles its grid from 4³), "
                                     f"got {side}")
    try:
        shape = grid_shape(sides)
    except ValueError as error:
        raise VolganInputError(None, f"--size: {error} (the GAN doubles its grid from 4 voxels on the smallest "
                                     f"side)") from None
    if any(n % divisor for n in shape):
        raise VolganInputError(None, f"--size: every side must be a multiple of {divisor} (the segmenter halves the "
                                     f"field {len(profile.channels) - 1} times), got {size}")
    return shape[0] if len(set(shape)) == 1 else shape


def run_study(out: str | os.PathLike, profile: StudyProfile | str = "quick", seeds: int | None = None,
              real: str | os.PathLike | None = None, quiet: bool = False, label_source: str | None = None,
              size: int | tuple[int, int, int] | None = None,
              spacing: float | tuple[float, float, float] | None = None, jobs: int | None = None,
              real_check: str | os.PathLike | None = None, executor: str = "local", address: str | None = None,
              gpu_share: float = 1.0) -> Path:
    """Run (or resume) the study under ``out``.

    Parameters
    ----------
    out : str | os.PathLike
        the study folder; stages already built there with the same settings are kept.
    profile : StudyProfile | str
        ``"tiny"``, ``"quick"``, ``"standard"`` or ``"paper"``, or a :class:`StudyProfile`.
    seeds : int | None
        training seeds per arm (None: the profile's).
    real : str | os.PathLike | None
        a datalist of the user's real data (None: generated phantoms).
    quiet : bool
        no progress on stderr.
    label_source : str | None
        where synthetic label maps come from (:data:`volgan.gan.synth.LABEL_SOURCES`; None: the
        profile's).
    size : int | tuple[int, int, int] | None
        the field in voxels: one side of a cube, a power of two ≥ 16, or three along R, A and S (thick slices along
        one of them), as :func:`_field_size` checks (None: the profile's).
    spacing : float | tuple[float, float, float] | None
        mm per voxel, one or three along R, A and S (None: the profile's).
    jobs : int | None
        stages built at a time by the local executor on a machine without a GPU (None: :func:`default_jobs`; 1 builds
        every stage in this process).
    real_check : str | os.PathLike | None
        the user's real scans for the real-MRI check (a datalist, or a folder ``volgan import`` reads), beside the
        scans shipped in ``data/real``.
    executor : str
        ``"local"`` (worker processes on this machine: one per GPU, or ``jobs`` on a CPU) or ``"ray"`` (Ray Core tasks
        on the cluster at ``address``), :mod:`volgan.study.executors`.
    address : str | None
        the Ray cluster (``auto``: the one this machine belongs to; None: a local one started for the study).
    gpu_share : float
        the fraction of a GPU each stage asks for (0.5: two stages share a GPU).

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    from volgan.gan.synth import check_label_source

    out = Path(out)
    profile = PROFILES[profile] if isinstance(profile, str) else profile
    if label_source is not None:
        profile = replace(profile, label_source=check_label_source(label_source))
    if size is not None:
        profile = replace(profile, size=_field_size(size, profile))
    if spacing is not None:
        sides = (spacing,) * 3 if isinstance(spacing, (int, float)) else tuple(spacing)
        if len(sides) != 3 or not all(math.isfinite(v) and v > 0 for v in sides):
            raise VolganInputError(None, f"--spacing must be a positive number of mm or three, got {spacing}")
        profile = replace(profile, spacing=sides[0] if len(set(sides)) == 1 else sides)
    if jobs is not None and jobs < 1:
        raise VolganInputError(None, f"--jobs must be at least 1, got {jobs}")
    if seeds is not None:
        if seeds < 2:
            raise VolganInputError(None, f"--seeds must be at least 2 (spread needs two runs), got {seeds}")
        profile = replace(profile, seeds=seeds)
    _check_out(out)
    real_path = None
    if real is not None:  # every check of the user's data before anything is written
        from volgan.data.datalist import check_cases

        data = read_datalist(real)
        real_path = Path(data.path)
        pool, test = split_user_data(data, profile)
        note = slice_axis_note([row["ras_spacing_mm"] for row in check_cases(pool + test, data.path)], profile)
        if note:
            print(f"volgan study: {note}", file=sys.stderr)
        profile = adapt_profile(profile, len(pool))
    bundles_root()
    from volgan.study.executors import make_executor, stages_per_gpu

    stages_per_gpu(gpu_share)
    jobs = default_jobs() if jobs is None else jobs
    workers = None if executor == "local" and jobs == 1 and address is None else make_executor(
        executor, jobs, gpu_share, address)
    try:
        _study(out, profile, real_path, real_check, quiet, workers)
    finally:
        if workers is not None:
            workers.close()
    return out / "report.html"


def _study(out: Path, profile: StudyProfile, real_path: Path | None, real_check, quiet: bool, executor) -> None:
    """Everything :func:`run_study` does once its arguments are checked: the folder, the base stages, the plan, the
    stages (by ``executor``, or here when None), the report published."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if hasattr(executor, "check_shared"):
        try:
            executor.check_shared(out)
        except VolganInputError:
            if created:
                out.rmdir()
            raise
    (out / "stages").mkdir(exist_ok=True)
    manifest = Manifest(out)
    check_list = None
    if real_check is not None:
        from volgan.evaluation.real_mri import real_check_datalist, user_scans

        check_list = real_check_datalist(real_check, out / "real_check")
        if not user_scans(check_list):
            raise VolganInputError(real_check, "holds no scan for the real-MRI check")
    settings = StudySettings(out, profile, real_path, check_list)
    write_text(out / "profile.json", json.dumps(asdict(profile), indent=1) + "\n")

    base = base_stages(settings)
    hash_plan(base)
    progress = Progress(quiet)
    progress.plan(base, complete=False)
    _run_stages(base, 1, settings, manifest, progress)
    stages = plan_study(settings)
    everything = base + stages
    hash_plan(everything)
    progress.plan(stages, finished=len(base), jobs=executor.slots if executor is not None else 1)
    if executor is not None and not quiet:
        print(f"volgan study: {executor.name} executor, {executor.describe()}", file=sys.stderr, flush=True)
    _run_stages(stages, len(base) + 1, settings, manifest, progress, executor)
    _prune(out, {s.key for s in everything}, manifest)
    _publish(out)
