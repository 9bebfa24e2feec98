"""The study (docs/design.md, "Study protocol"): the ratio sweep and the augmentation comparison in one command.

``run_study(out, profile)`` builds a plan of stages and runs the ones whose configuration changed. Each
stage writes into ``OUT/stages/<key>`` (built in a hidden ``.partial`` folder, renamed when finished) and
is recorded in ``OUT/manifest.json`` with the hash of its configuration and of every stage it reads, so an
interrupted study picks up where it stopped and a changed setting recomputes only what depends on it.

Stages, in order: ``data`` (phantoms or the user's datalist: a real training pool and a fixed test set
with equal counts per ``tumor_type``) → ``gan-N`` (bundles/spine_cgan trained on the first N cases of the
real pool only, one GAN per real-pool size) → ``synth-N`` (its synthetic pool) → ``run-*`` (bundles/
spine_segcls trained on one arm and seed) → ``eval-*`` (that model on the real test set, clean, and for the
augmentation comparison's arms also at three artifact severities) → ``quality`` (``volgan quality`` of the
full pool's synthetic data) → ``report`` (:mod:`volgan.study_report`).

Every segmenter-classifier trains on exactly its arm's cases (the bundle holds none out: ``val_fraction`` 0,
its batches keep the arm's real:synthetic ratio, and the stage keeps the list as ``trained_on.json``), sees the
same number of training-volume presentations (epochs = presentations / training volumes), so arms with more
volumes do not get more optimisation steps, and is evaluated as it is after its last epoch: the bundle's own
``models/model_final.pt``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from volgan.datalist import Case, Datalist, balanced_test_split, read_datalist, write_datalist
from volgan.errors import VolganInputError
from volgan.io import atomic_path, strict_json, write_text

SHARES = tuple(round(0.1 * k, 1) for k in range(11))  # synthetic share of the sweep: 100:0 … 0:100
ARMS = ("none", "classical", "gan", "both")
GRADCAM_ARMS = ("none", "gan")  # the arms seed 1's Grad-CAM claim compares
MANIFEST = "manifest.json"
REPORT_FILES = ("study.json", "study.csv", "report.md", "report.html")


@dataclass(frozen=True)
class StudyProfile:
    """Sizes of one study. Volumes are ``size``³ voxels of ``spacing`` mm; counts are volumes."""

    name: str
    size: int
    spacing: float
    real_pool: int                      # real training pool (phantoms; with --real, what the datalist holds)
    test: int                           # fixed real test set, equal per tumor_type
    sweep_size: int                     # fixed training-set size of the ratio sweep
    pool_sizes: tuple[int, ...]         # real-pool sizes of the augmentation comparison
    synthetic: int                      # synthetic pool per GAN
    seeds: int
    channels: tuple[int, ...]           # spine_segcls widths
    presentations: int                  # training-volume presentations per segmenter-classifier
    batch_size: int
    gan_presentations: int              # training-volume presentations of each GAN (epochs = this / pool)
    gan_base: int
    gan_batch_size: int
    learning_rate: float = 0.002
    bootstrap: int = 2000
    seed: int = 0                       # phantoms, test split, pools, GANs and synthesis
    anatomy_field_mm: float | None = 96.0  # phantoms: anatomy at natural size, the grid a crop of it
    label_source: str = "real-deformed"  # synthetic label maps: volgan.synth.LABEL_SOURCES (BENCHMARKS.md: why)
    loader_workers: int = 0             # spine_segcls loader processes for runs that augment (on the CPU, beside a GPU)

    def gan_epochs(self, pool: int) -> int:
        return max(1, round(self.gan_presentations / pool))

    @classmethod
    def from_dict(cls, saved: dict) -> StudyProfile:
        """The profile a study saved as ``profile.json`` (its lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


PROFILES = {
    "tiny": StudyProfile("tiny", size=16, spacing=3.0, real_pool=12, test=8, sweep_size=10, pool_sizes=(6, 12),
                         synthetic=12, seeds=2, channels=(4, 8, 16, 32), presentations=24, batch_size=4,
                         gan_presentations=24, gan_base=4, gan_batch_size=4, bootstrap=200),
    # The GANs see each volume one at a time: of 320 presentations, batches of 8 made 39 steps (gan-24) and synthetic
    # volumes in which the study's real-only judge found anatomy Dice 0.78/0.81/0.63/0.61 (vertebra/disc/cord/
    # csf) and tumor Dice 0.12; batches of 1 (312 steps; in the study 128 s and 113 s for the two GANs against
    # 56 s and 48 s) give 0.86/0.89/0.84/0.87 and 0.29, as batches of 2 with half again the presentations do
    # (BENCHMARKS.md, "The study's GAN by batch size").
    "quick": StudyProfile("quick", size=32, spacing=1.5, real_pool=24, test=96, sweep_size=24, pool_sizes=(12, 24),
                          synthetic=24, seeds=2, channels=(16, 32, 64, 128), presentations=480, batch_size=2,
                          gan_presentations=320, gan_base=16, gan_batch_size=1),
    # The quick profile's design with the budget at which its real-only arm met the learning targets (1,200
    # presentations, BENCHMARKS.md), a test set twice as large and a third seed, for the resolution; on 2 CPU
    # cores at most 83 min from nothing with stages two at a time, every learning and resolution target met
    # (BENCHMARKS.md, "Study, standard profile").
    "standard": StudyProfile("standard", size=32, spacing=1.5, real_pool=24, test=192, sweep_size=24,
                             pool_sizes=(12, 24), synthetic=24, seeds=3, channels=(16, 32, 64, 128),
                             presentations=1200, batch_size=2, gan_presentations=1200, gan_base=16, gan_batch_size=8),
    # The sizes of arXiv 2506.17165 at 64³, with the budget that fits 6 hours on one H100 (BENCHMARKS.md, "The
    # paper profile, measured and projected": 5.2 h projected from each stage kind measured there; 5 seeds, 40,000
    # presentations per run and 200,000 per GAN projected to 19.7 h). How well it learns at this budget is unmeasured.
    # The loader's 8 processes run the classical preset beside the GPU (29.5 against 47.8 ms a presentation there;
    # without augmentation they gained nothing).
    "paper": StudyProfile("paper", size=64, spacing=1.5, real_pool=1000, test=400, sweep_size=1000,
                          pool_sizes=(250, 1000), synthetic=1000, seeds=3, channels=(16, 32, 64, 128),
                          presentations=12000, batch_size=8, gan_presentations=40000, gan_base=32,
                          gan_batch_size=8, loader_workers=8),
}


def bundles_root() -> Path:
    """The folder holding ``spine_segcls`` and ``spine_cgan`` (``$VOLGAN_BUNDLES``, else beside the package)."""
    root = Path(os.environ.get("VOLGAN_BUNDLES", Path(__file__).resolve().parents[1] / "bundles"))
    if not (root / "spine_segcls" / "configs" / "train.json").is_file():
        raise VolganInputError(root, "no spine_segcls bundle here; set VOLGAN_BUNDLES to volgan's bundles/ folder")
    return root


def bundle_version(bundle: str) -> str:
    """The ``version`` of ``bundles/<bundle>/configs/metadata.json``: part of every stage that runs the bundle, so
    a new training recipe retrains what it trained."""
    meta = bundles_root() / bundle / "configs" / "metadata.json"
    return str(json.loads(meta.read_text(encoding="utf-8"))["version"])


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------------
# Stages and the manifest


@dataclass
class Stage:
    """One unit of work: ``build(folder)`` fills a fresh folder; ``config`` and ``deps`` decide its hash."""

    key: str
    kind: str
    label: str
    config: dict
    deps: tuple[str, ...]
    build: Callable[[Path], None]
    resumable: bool = False             # keep a half-built folder (the GAN resumes from its checkpoint)
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

    def record(self, stage: Stage, seconds: float) -> None:
        self.stages[stage.key] = {"hash": stage.hash, "kind": stage.kind, "label": stage.label,
                                  "seconds": round(seconds, 2), "deps": list(stage.deps)}
        self.save()

    def save(self) -> None:
        write_text(self.path, json.dumps({"version": 1, "stages": self.stages}, indent=1) + "\n")


def _hash_plan(stages: list[Stage]) -> None:
    known: dict[str, str] = {}
    for stage in stages:
        stage.hash = digest({"kind": stage.kind, "config": stage.config, "deps": [known[d] for d in stage.deps]})
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
# Data


def _phantom_data(folder: Path, profile: StudyProfile) -> None:
    from volgan.phantom import PhantomConfig, make_dataset

    n = profile.real_pool + profile.test
    make_dataset(folder / "real", n, PhantomConfig(size=(profile.size,) * 3, spacing=(profile.spacing,) * 3,
                                                   anatomy_field_mm=profile.anatomy_field_mm),
                 seed=profile.seed, test_fraction=profile.test / n, workers=min(2, os.cpu_count() or 1))


def _user_data(folder: Path, datalist: Path, profile: StudyProfile) -> None:
    """The user's cases resampled onto the profile's field (``size`` voxels of ``spacing`` mm, RAS) centred on each
    case's labeled spine (:func:`volgan.transforms.field_about_foreground`), so that the GAN and the segmenter
    both see that field, whatever the scan's extent."""
    import torch

    from volgan.datalist import layout_paths
    from volgan.io import Volume, read_volume, write_nifti
    from volgan.transforms import field_about_foreground, resample

    data = read_datalist(datalist)
    pool, test = split_user_data(data, profile)
    root = folder / "real"
    size, spacing = (profile.size,) * 3, (profile.spacing,) * 3
    cases = []
    for case, split in [(c, "training") for c in pool] + [(c, "test") for c in test]:
        image, label = read_volume(case.image), read_volume(case.label, label=True)
        affine = field_about_foreground(label.affine, label.array, size, spacing)
        image_path, label_path = layout_paths(root, case.name, split, "msd")
        field_image = resample(torch.from_numpy(image.array)[None], image.affine, affine, size)[0].numpy()
        field_label = resample(torch.from_numpy(label.array)[None], label.affine, affine, size, "nearest")[0].numpy()
        write_nifti(Volume(field_image, affine), image_path)
        write_nifti(Volume(field_label.astype(np.uint8), affine), label_path)
        cases.append(replace(case, image=image_path, label=label_path, split=split))
    write_datalist(cases, root, meta={"volgan": {"source_datalist": str(datalist), "field_voxels": profile.size,
                                                 "field_spacing_mm": profile.spacing}})


MIN_USER_CASES = 8


def split_user_data(data: Datalist, profile: StudyProfile) -> tuple[list[Case], list[Case]]:
    """(real pool, test set) of a user's datalist: its own labeled test split when it has one, otherwise a
    test set with equal counts per ``tumor_type`` drawn with the profile's seed: a third of the cases up to the
    profile's test size, and at least one case of every class that has two or more (the other stays for
    training). The rule: at least 8 real cases with a label map and a ``tumor_type``, two or more of those
    classes with at least two cases each, and at least four cases left for training."""
    if all(c.tumor_type is None for c in data.cases):
        raise VolganInputError(data.path, "no case has a tumor_type: the study compares tumor detection and "
                                          "segmentation across arms and needs tumor classes; for segmentation-only "
                                          "data, train and evaluate spine_segcls directly (README: real data)")
    labeled = [c for c in data.cases if c.label is not None and c.tumor_type is not None and c.source == "real"]
    rule = (f"the study needs at least {MIN_USER_CASES} real cases with a label map and a tumor_type, two or more "
            f"tumor_type values with at least two cases each, and four or more cases left for training")
    if len(labeled) < MIN_USER_CASES:
        raise VolganInputError(data.path, f"{rule}; this datalist has {len(labeled)} such cases")
    test = [c for c in labeled if c.split == "test"]
    pool = [c for c in labeled if c.split != "test"]
    if not test:
        types = [c.tumor_type for c in pool]
        splittable = sum(1 for t in set(types) if types.count(t) >= 2)
        chosen = balanced_test_split(types, max(min(profile.test, len(pool) // 3), splittable), profile.seed)
        test = [c for i, c in enumerate(pool) if i in chosen]
        pool = [c for i, c in enumerate(pool) if i not in chosen]
    if len({c.tumor_type for c in test}) < 2 or len(pool) < 4:
        raise VolganInputError(data.path, f"{rule}; got {len(test)} test cases of {len({c.tumor_type for c in test})}"
                                          f" type(s) and {len(pool)} training cases")
    return pool, test


def _data_fingerprint(datalist: Path) -> dict:
    """What the user's data stage depends on: the datalist's bytes and each file's size and mtime."""
    data = read_datalist(datalist)
    files = sorted({str(p) for c in data.cases for p in (c.image, c.label) if p is not None})
    stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    return {"datalist": hashlib.sha256(Path(data.path).read_bytes()).hexdigest(), "files": digest(stats)}


def adapt_profile(profile: StudyProfile, pool_size: int) -> StudyProfile:
    """The profile's sizes fitted to a real pool of ``pool_size`` cases (the user's data may be smaller); the
    augmentation comparison keeps two or more real-pool sizes."""
    sweep = min(profile.sweep_size, pool_size)
    pools = {p for p in profile.pool_sizes if p < pool_size} | {min(max(profile.pool_sizes), pool_size)}
    if len(pools) < 2:
        pools.add(max(2, pool_size // 2))
    pools = tuple(sorted(pools))
    return replace(profile, real_pool=pool_size, sweep_size=sweep, pool_sizes=pools,
                   synthetic=max(profile.synthetic, sweep, max(pools)))


def real_cases(out: Path) -> tuple[list[Case], list[Case]]:
    """(real pool, test set) of a finished data stage, the pool in a seeded class-stratified order."""
    data = read_datalist(out / "stages" / "data" / "real")
    return data.split("training"), data.split("test")


def pool_subset(pool: list[Case], n: int, seed: int) -> list[Case]:
    """``n`` cases of the real pool, stratified by ``tumor_type`` and nested (smaller subsets lie inside
    larger ones for the same seed)."""
    if n >= len(pool):
        return list(pool)
    order = np.random.default_rng([seed, 0xB001]).permutation(len(pool))
    by_type: dict[int, list[int]] = {}
    for i in order:
        by_type.setdefault(pool[i].tumor_type, []).append(int(i))
    interleaved = [i for rank in range(len(pool)) for members in by_type.values() if rank < len(members)
                   for i in [members[rank]]]
    return [pool[i] for i in sorted(interleaved[:n])]


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


FINAL_MODEL = "model_final.pt"  # written by spine_segcls itself (its final-model CheckpointSaver)
# How evaluation calls a tumor (and, since v2, that Grad-CAM leaves the head's dropout off); a change re-runs it
EVALUATION_VERSION = "segmentation evidence, bf16 where native, v2: dropout off after Grad-CAM"
TRAINED_ON = "trained_on.json"


def run_bundle(bundle: str, folder: Path, overrides: dict, bar=None) -> None:
    """Run ``bundles/<bundle>/configs/train.json`` in this process with ``overrides`` (bundle_root = folder).
    Its log goes to ``folder/train.log``; ``bar`` (tqdm) advances once per epoch. For spine_segcls the cases the
    bundle trained on (its own ``split``) are written to ``folder/trained_on.json`` as {"name", "source"}."""
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


# --------------------------------------------------------------------------------------------------------
# Arms


@dataclass(frozen=True)
class Arm:
    """One training configuration of the study: a training set, an augmentation preset, a seed."""

    section: str                        # "sweep" or "augmentation"
    arm: str                            # sweep: "100:0" …; augmentation: none|classical|gan|both
    seed: int
    real: tuple[str, ...]               # real case names
    synthetic: tuple[str, ...]          # synthetic case names (from gan_pool's synthetic pool)
    augment: str
    gan_pool: int = 0                   # which GAN's synthetic pool (0: none)
    share: float = 0.0                  # sweep: synthetic share
    real_pool: int = 0                  # augmentation: real-pool size

    @property
    def n_train(self) -> int:
        return len(self.real) + len(self.synthetic)


def _names(cases: list[Case]) -> tuple[str, ...]:
    return tuple(sorted(c.name for c in cases))


def plan_arms(profile: StudyProfile, pool: list[Case], synthetic: dict[int, list[str]]) -> list[Arm]:
    """Every arm and seed: the 11-share sweep at ``sweep_size`` and the four-arm comparison per real-pool size
    (GAN arms add as many synthetic volumes as there are real ones, from the GAN of that pool)."""
    from volgan.loader import mix_cases

    arms = []
    full = max(profile.pool_sizes)
    synth_full = [Case(n, None, None, None, "synthetic") for n in synthetic[full]]
    for seed in range(profile.seeds):
        for share in SHARES:
            mix = mix_cases(pool, synth_full, synthetic_share=share, size=profile.sweep_size, seed=seed)
            real = [c for c in mix if c.source != "synthetic"]
            synth = [c for c in mix if c.source == "synthetic"]
            label = f"{round(100 * (1 - share))}:{round(100 * share)}"
            arms.append(Arm("sweep", label, seed, _names(real), _names(synth), "none", full if synth else 0, share))
        for n in profile.pool_sizes:
            real = pool_subset(pool, n, profile.seed)
            synth_pool = [Case(s, None, None, None, "synthetic") for s in synthetic[n]]
            extra = mix_cases(real, synth_pool, extra=min(n, len(synth_pool)), seed=seed)
            extra = [c for c in extra if c.source == "synthetic"]
            for arm in ARMS:
                with_gan = arm in ("gan", "both")
                arms.append(Arm("augmentation", arm, seed, _names(real), _names(extra) if with_gan else (),
                                "classical" if arm in ("classical", "both") else "none", n if with_gan else 0,
                                real_pool=n))
    return arms


def run_key(arm: Arm, profile: StudyProfile) -> tuple[str, dict, tuple[str, ...]]:
    """The run stage of an arm: its key (arms that agree share it), training configuration and dependencies."""
    config = training_config(arm, profile)
    deps = ("data",) + ((f"synth-{arm.gan_pool}",) if arm.synthetic else ())
    return "run-" + digest([config, deps])[:12], config, deps


def eval_key(run: str) -> str:
    """The evaluation stage of the run stage ``run``."""
    return "eval-" + run.removeprefix("run-")


def training_config(arm: Arm, profile: StudyProfile) -> dict:
    """What a segmenter-classifier run depends on (arms that agree share one run). Every case of the arm trains
    (the bundle holds none out), so ``epochs`` × the arm's size is the profile's presentations, rounded up."""
    from volgan.transforms import CLASSICAL_RECIPE

    epochs = max(1, math.ceil(profile.presentations / max(arm.n_train, 1)))
    config = {"real": arm.real, "synthetic": arm.synthetic, "gan_pool": arm.gan_pool, "augment": arm.augment,
              "seed": arm.seed, "epochs": epochs, "size": profile.size, "spacing": profile.spacing,
              "channels": list(profile.channels), "batch_size": profile.batch_size,
              "learning_rate": profile.learning_rate,
              "loader_workers": profile.loader_workers if arm.augment != "none" else 0,  # none: no gain measured
              "bundle": bundle_version("spine_segcls")}
    if arm.augment == "classical":  # the preset lives in volgan, not in the bundle's config
        config["augment_recipe"] = CLASSICAL_RECIPE
    return config


# --------------------------------------------------------------------------------------------------------
# Stage builders


def _train_segcls(folder: Path, out: Path, config: dict, progress: Progress) -> None:
    pool, _ = real_cases(out)
    by_name = {c.name: c for c in pool}
    cases = [replace(by_name[n], split="training") for n in config["real"]]
    if config["synthetic"]:
        synth = read_datalist(out / "stages" / f"synth-{config['gan_pool']}" / "synthetic")
        named = {c.name: c for c in synth.cases}
        cases += [replace(named[n], split="training") for n in config["synthetic"]]
    cases.sort(key=lambda c: (c.source, c.name))
    write_datalist(cases, folder)
    s, sp = config["size"], config["spacing"]
    with progress.bar(config["epochs"], "segcls") as bar:
        run_bundle("spine_segcls", folder, {
            "dataset_dir": str(folder), "max_epochs": config["epochs"], "patch": [s, s, s], "spacing": [sp] * 3,
            "channels": config["channels"], "batch_size": config["batch_size"], "augment": config["augment"],
            "seed": config["seed"], "learning_rate": config["learning_rate"],
            "val_fraction": 0.0, "val_interval": config["epochs"], "num_workers": config["loader_workers"]}, bar)


@functools.lru_cache(maxsize=2048)  # every profile's whole test set at every severity (paper: 400 × 4 at 64³, 2 GB)
def test_volume(image: Path, label: Path, severity: int):
    """A test case's (image with artifacts of ``severity``, label map). The artifacts' random draws depend
    only on the case and the severity, so every model sees the same corrupted test set."""
    from volgan.io import Volume, read_volume
    from volgan.transforms import corrupt

    volume, reference = read_volume(image), read_volume(label, label=True)
    seed = int.from_bytes(hashlib.sha256(f"{Path(image).name}:{severity}".encode()).digest()[:4], "little")
    return Volume(corrupt(volume.array, volume.affine, severity, seed), volume.affine), reference


def gradcam_tumor_share(model, prediction, image, label, dilation: int = 2, precision: str = "fp32") -> float:
    """Share of the Grad-CAM heat map's mass (:func:`volgan.gradcam.gradcam_volume`, tumor class) that lies in
    the reference tumor dilated by ``dilation`` voxels (6-connectivity): seed 1's "attention on tumor regions"
    as a number in [0, 1]. NaN for a volume without a tumor or a map without mass."""
    from scipy import ndimage

    from volgan.gradcam import gradcam_volume
    from volgan.labels import TUMOR_LABEL

    tumor = label.array == TUMOR_LABEL
    if not tumor.any():
        return math.nan
    region = ndimage.binary_dilation(tumor, ndimage.generate_binary_structure(3, 1), iterations=dilation)
    heat = gradcam_volume(model, prediction, image, precision=precision).array.astype(np.float64)
    total = float(heat.sum())
    return float(heat[region].sum() / total) if total > 0 else math.nan


def evaluate_model(model_path: Path, test: list[Case], severities: tuple[int, ...], gradcam: bool = False
                   ) -> list[dict]:
    """Per test case and artifact severity: tumor_type probabilities, the segmentation's tumor evidence (mm³) and
    per-label Dice and IoU; with ``gradcam`` also ``gradcam_tumor_share`` (:func:`gradcam_tumor_share`) on the
    clean tumor-bearing volumes. The network runs in bfloat16 where spine_segcls trains in it by default (a CPU
    with native bfloat16: 30 ms a 32³ volume against 170 ms in float32 here), for every arm alike."""
    from volgan.inference import load_model, predict
    from volgan.metrics import confusion_counts, dice_iou
    from volgan.train import bf16_autocast

    model = load_model(model_path)
    precision = "bf16" if bf16_autocast("auto", model.device) else "fp32"  # as spine_segcls trains by default
    rows = []
    for case in test:
        for severity in severities:
            image, label = test_volume(case.image, case.label, severity)
            prediction = predict(model, image, precision=precision)
            counts = confusion_counts(prediction.label.array, label.array)
            scores = {k: dice_iou(v) for k, v in counts.items()}
            row = {"case": case.name, "tumor_type": int(case.tumor_type), "severity": severity,
                   "probabilities": [round(float(p), 6) for p in prediction.type_probabilities],
                   "tumor_evidence_mm3": round(float(prediction.tumor_evidence_mm3), 6),
                   "dice": {str(k): d for k, (d, _) in scores.items()},
                   "iou": {str(k): i for k, (_, i) in scores.items()}}
            if gradcam and severity == 0:
                row["gradcam_tumor_share"] = gradcam_tumor_share(model, prediction, image, label, precision=precision)
            rows.append(row)
    return rows


def _evaluate(folder: Path, out: Path, run_key: str, severities: tuple[int, ...], gradcam: bool = False) -> None:
    _, test = real_cases(out)
    rows = evaluate_model(out / "stages" / run_key / "models" / FINAL_MODEL, test, severities, gradcam)
    write_text(folder / "eval.json", json.dumps(strict_json(rows)) + "\n")


def _train_gan(folder: Path, out: Path, names: tuple[str, ...], profile: StudyProfile, progress: Progress) -> None:
    pool, _ = real_cases(out)
    chosen = [c for c in pool if c.name in set(names)]
    data = folder / "data"
    data.mkdir(exist_ok=True)
    write_datalist(chosen, data)
    overrides = gan_overrides(profile, data, len(chosen))
    with progress.bar(overrides["max_epochs"], "cgan") as bar:
        run_bundle("spine_cgan", folder, overrides, bar)


def gan_overrides(profile: StudyProfile, data: Path, n_cases: int) -> dict:
    """spine_cgan's overrides for the profile's GAN on the ``n_cases`` of the datalist folder ``data``."""
    return {"dataset_dir": str(data), "max_epochs": profile.gan_epochs(n_cases), "size": profile.size,
            "spacing": [profile.spacing] * 3, "base": profile.gan_base, "batch_size": profile.gan_batch_size,
            "seed": profile.seed, "monitor_interval": 10**6}


def _synthesize(folder: Path, out: Path, pool: int, profile: StudyProfile) -> None:
    from volgan.synth import load_synthesizer, synthesize

    deformed = profile.label_source == "real-deformed"
    synthesize(load_synthesizer(out / "stages" / f"gan-{pool}"), folder / "synthetic", n_cases=profile.synthetic,
               seed=profile.seed, label_source=profile.label_source,
               pool=out / "stages" / f"gan-{pool}" / "data" if deformed else None)  # the GAN's own pool, no test map


def _quality(folder: Path, out: Path, pool: int, model_run: str) -> None:
    from volgan.quality import quality_report

    quality_report(out / "stages" / "data" / "real", out / "stages" / f"synth-{pool}" / "synthetic",
                   folder / "quality", model=out / "stages" / model_run / "models" / FINAL_MODEL)


# --------------------------------------------------------------------------------------------------------
# The plan and the run


@dataclass
class StudySettings:
    """What the user chose: where, which profile (seeds included), whose data."""

    out: Path
    profile: StudyProfile
    real: Path | None = None


def _base_stages(settings: StudySettings) -> list[Stage]:
    profile = settings.profile
    if settings.real is None:
        data_config = {"phantom": {k: v for k, v in asdict(profile).items()
                                   if k in ("size", "spacing", "real_pool", "test", "seed", "anatomy_field_mm")}}
        build = lambda f: _phantom_data(f, profile)  # noqa: E731
    else:
        data_config = {"datalist": str(settings.real.resolve()), "fingerprint": _data_fingerprint(settings.real),
                       "test": profile.test, "seed": profile.seed, "size": profile.size, "spacing": profile.spacing,
                       "field": "foreground-centred"}
        build = lambda f: _user_data(f, settings.real, profile)  # noqa: E731
    return [Stage("data", "data", "real data: training pool and balanced test set", data_config, (), build)]


def evaluated_runs(arms: list[Arm], profile: StudyProfile) -> tuple[set[str], set[str]]:
    """The run keys whose evaluation adds Grad-CAM (seed 1's claim, tested on scarce data: the smallest pool's
    none and GAN arms) and those evaluated at every artifact severity (the augmentation comparison's arms)."""
    scarce = min(profile.pool_sizes)
    gradcam = {run_key(a, profile)[0] for a in arms
               if a.section == "augmentation" and a.arm in GRADCAM_ARMS and a.real_pool == scarce}
    robustness = {run_key(a, profile)[0] for a in arms if a.section == "augmentation"}
    return gradcam, robustness


def plan_study(settings: StudySettings, progress: Progress) -> list[Stage]:
    """Every stage of the study in running order (needs the data stage finished for case names)."""
    profile, out = settings.profile, settings.out
    pool, test = real_cases(out)
    stages: list[Stage] = []
    gan_config = {k: v for k, v in asdict(profile).items()
                  if k in ("size", "spacing", "gan_presentations", "gan_base", "gan_batch_size", "seed")}
    gan_config["bundle"] = bundle_version("spine_cgan")
    synthetic: dict[int, list[str]] = {}
    for n in profile.pool_sizes:
        names = _names(pool_subset(pool, n, profile.seed))
        stages.append(Stage(f"gan-{n}", "gan", f"spine_cgan on {n} real volumes", {"pool": names, **gan_config},
                            ("data",), lambda f, names=names: _train_gan(f, out, names, profile, progress),
                            resumable=True))
        stages.append(Stage(f"synth-{n}", "synth", f"{profile.synthetic} synthetic volumes from gan-{n}",
                            {"n": profile.synthetic, "seed": profile.seed, "pose": "training spread v1",
                             "label_source": profile.label_source},
                            (f"gan-{n}",),
                            lambda f, n=n: _synthesize(f, out, n, profile)))
        synthetic[n] = [f"synth_{i:05d}" for i in range(profile.synthetic)]
    arms = plan_arms(profile, pool, synthetic)
    runs: dict[str, Stage] = {}
    gradcam_runs, robustness_runs = evaluated_runs(arms, profile)
    for arm in arms:
        key, config, deps = run_key(arm, profile)
        if key in runs:
            continue
        runs[key] = Stage(key, "run", f"spine_segcls {arm.section} {arm.arm}"
                          + (f" (real pool {arm.real_pool})" if arm.real_pool else "") + f", seed {arm.seed}",
                          config, deps, lambda f, c=config: _train_segcls(f, out, c, progress))
        evaluation, gradcam = eval_key(key), key in gradcam_runs
        severities = (0, 1, 2, 3) if key in robustness_runs else (0,)  # only the comparison's arms are compared
        runs[evaluation] = Stage(evaluation, "eval", f"evaluate {key} on {len(test)} test volumes × "
                                 f"{len(severities)} condition(s)" + (" and Grad-CAM" if gradcam else ""),
                                 {"test": _names(test), "severities": list(severities), "model": FINAL_MODEL,
                                  "tumor_call": EVALUATION_VERSION,
                                  **({"gradcam": "tumor share, dilation 2"} if gradcam else {})},
                                 ("data", key), lambda f, k=key, g=gradcam, sv=severities: _evaluate(f, out, k, sv, g))
    stages += list(runs.values())
    full = max(profile.pool_sizes)
    reference = next(a for a in arms if a.section == "sweep" and a.share == 0.0 and a.seed == 0)
    ref_key = run_key(reference, profile)[0]
    stages.append(Stage("quality", "quality", f"volgan quality of synth-{full}", {"model": ref_key},
                        ("data", f"synth-{full}", ref_key), lambda f: _quality(f, out, full, ref_key)))
    eval_keys = sorted(k for k in runs if k.startswith("eval-"))
    arms_doc = [{**asdict(a), "eval": eval_key(run_key(a, profile)[0])} for a in arms]

    def build_report(folder: Path) -> None:
        from volgan.study_report import write_study_report

        write_study_report(folder, out, profile, arms_doc, settings.real)

    stages.append(Stage("report", "report", "study report", {"arms": arms_doc, "profile": asdict(profile),
                                                             "version": 2},
                        tuple(["quality", *eval_keys]), build_report))
    return stages


PARALLEL_KINDS = ("gan", "synth", "run", "eval")  # stages a worker process may build beside another


def default_jobs() -> int:
    """Stages built at a time: 1 with a GPU (one device, its stages in turn); otherwise 2 when there are two or
    more CPU cores, each worker on its share of the cores. On 2 cores two spine_segcls runs of one thread each
    train 1.8× as many volumes a second as one run of two threads (BENCHMARKS.md, "Study stages side by side")."""
    import torch

    if torch.cuda.is_available():
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


_WORKER_STAGES: dict[str, Stage] = {}
_WORKER_ERROR: list[BaseException] = []


def _worker_init(settings: StudySettings, threads: int) -> None:
    """A worker process: its share of the cores and the study's plan (rebuilt here: stages hold closures). It
    leaves Ctrl-C to the main process, which stops it, and ends itself when that process is gone (killed)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def end_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=end_with_parent, daemon=True).start()
    try:
        import torch

        torch.set_num_threads(threads)
        _WORKER_STAGES.update({s.key: s for s in plan_study(settings, Progress(quiet=True))})
    except Exception as exc:  # reported with the first stage it was to build
        _WORKER_ERROR.append(exc)


def _worker_build(key: str, folder: str) -> tuple[str, object]:
    """Build stage ``key`` into ``folder`` in a worker process: ("done", seconds), or ("error", the exception),
    which the main process raises (a NaN stop, a SystemExit, included)."""
    try:
        if _WORKER_ERROR:
            raise _WORKER_ERROR[0]
        start = time.perf_counter()
        _WORKER_STAGES[key].build(Path(folder))
        return "done", time.perf_counter() - start
    except (Exception, SystemExit) as exc:
        return "error", exc


def _partial_folder(stage: Stage, out: Path) -> Path:
    """A fresh (or, for a resumable stage, the kept) folder the stage is built in."""
    partial = out / "stages" / f".{stage.key}.{stage.hash[:12]}.partial"
    if partial.exists() and not stage.resumable:
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    return partial


def _finish_stage(stage: Stage, out: Path, partial: Path, seconds: float, manifest: Manifest,
                  progress: Progress) -> None:
    folder = out / "stages" / stage.key
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    manifest.record(stage, seconds)
    progress.done(stage, seconds, False)


def _run_stages(stages: list[Stage], first: int, settings: StudySettings, manifest: Manifest, progress: Progress,
                jobs: int) -> None:
    """Build every stage not finished before, each once all it reads is there. With ``jobs`` > 1 the stages of
    :data:`PARALLEL_KINDS` are built by that many worker processes (spawned, each with its share of the torch
    threads); the others run here, alone. Numbering and order of the progress lines follow the plan."""
    import multiprocessing
    import queue

    out = settings.out
    planned = {s.key for s in stages}
    done = {key for key in manifest.stages if key not in planned and (out / "stages" / key).is_dir()}  # base stages
    pending = list(enumerate(stages, start=first))
    running: dict[str, tuple[Stage, Path]] = {}
    finished: queue.Queue = queue.Queue()
    pool = None
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
                    elif jobs > 1 and stage.kind in PARALLEL_KINDS:
                        if len(running) >= jobs:
                            continue
                        if pool is None:
                            threads = max(1, (os.cpu_count() or 1) // jobs)
                            pool = multiprocessing.get_context("spawn").Pool(jobs, _worker_init, (settings, threads))
                        progress.start(index, stage, False)
                        partial = _partial_folder(stage, out)
                        running[stage.key] = (stage, partial)
                        pool.apply_async(_worker_build, (stage.key, str(partial)),
                                         callback=lambda result, key=stage.key: finished.put((key, result)))
                    elif not running:
                        progress.start(index, stage, False)
                        partial = _partial_folder(stage, out)
                        start = time.perf_counter()
                        stage.build(partial)
                        _finish_stage(stage, out, partial, time.perf_counter() - start, manifest, progress)
                        done.add(stage.key)
                    else:
                        continue
                    pending.remove(item)
                    launched = True
                    break
            if running:
                while True:
                    try:
                        key, (status, value) = finished.get(timeout=1.0)
                        break
                    except queue.Empty:
                        continue
                stage, partial = running.pop(key)
                if status == "error":
                    raise value
                _finish_stage(stage, out, partial, value, manifest, progress)
                done.add(key)
            elif pending:
                raise RuntimeError(f"study plan: {pending[0][1].key} waits on a stage that is never built")
    except BaseException:
        if pool is not None:
            pool.terminate()  # stages in flight stay as .partial folders, rebuilt (the GAN resumed) next time
        raise
    if pool is not None:
        pool.close()
        pool.join()


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


def run_study(out: str | os.PathLike, profile: StudyProfile | str = "quick", seeds: int | None = None,
              real: str | os.PathLike | None = None, quiet: bool = False, label_source: str | None = None,
              size: int | None = None, spacing: float | None = None, jobs: int | None = None) -> Path:
    """Run (or resume) the study under ``out``; returns the path of ``report.html``. ``label_source`` (None: the
    profile's) says where synthetic label maps come from (:data:`volgan.synth.LABEL_SOURCES`); ``size`` (voxels
    per side, a power of two ≥ 16) and ``spacing`` (mm) override the profile's field, for phantoms and real data.
    ``jobs``: stages built at a time (None: :func:`default_jobs`; 1 builds every stage in this process)."""
    from volgan.synth import check_label_source

    out = Path(out)
    profile = PROFILES[profile] if isinstance(profile, str) else profile
    if label_source is not None:
        profile = replace(profile, label_source=check_label_source(label_source))
    if size is not None:
        if size < 16 or size & (size - 1):
            raise VolganInputError(None, f"--size must be a power of two, 16 or more (the GAN doubles its grid from "
                                         f"4³), got {size}")
        profile = replace(profile, size=size)
    if spacing is not None:
        if not (math.isfinite(spacing) and spacing > 0):
            raise VolganInputError(None, f"--spacing must be a positive number of mm, got {spacing}")
        profile = replace(profile, spacing=spacing)
    if jobs is not None and jobs < 1:
        raise VolganInputError(None, f"--jobs must be at least 1, got {jobs}")
    if seeds is not None:
        if seeds < 2:
            raise VolganInputError(None, f"--seeds must be at least 2 (spread needs two runs), got {seeds}")
        profile = replace(profile, seeds=seeds)
    _check_out(out)
    real_path = None
    if real is not None:  # every check of the user's data before anything is written
        from volgan.datalist import check_cases

        data = read_datalist(real)
        real_path = Path(data.path)
        pool, test = split_user_data(data, profile)
        check_cases(pool + test, data.path)
        profile = adapt_profile(profile, len(pool))
    bundles_root()
    out.mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True)
    manifest = Manifest(out)
    settings = StudySettings(out, profile, real_path)
    write_text(out / "profile.json", json.dumps(asdict(profile), indent=1) + "\n")

    base = _base_stages(settings)
    _hash_plan(base)
    progress = Progress(quiet)
    progress.plan(base, complete=False)
    _run_stages(base, 1, settings, manifest, progress, jobs=1)
    stages = plan_study(settings, progress)
    everything = base + stages
    _hash_plan(everything)
    jobs = default_jobs() if jobs is None else jobs
    progress.plan(stages, finished=len(base), jobs=jobs)
    _run_stages(stages, len(base) + 1, settings, manifest, progress, jobs)
    _prune(out, {s.key for s in everything}, manifest)
    _publish(out)
    return out / "report.html"
