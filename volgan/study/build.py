"""What the study's stages build: a spine_segcls run on one arm, its evaluation on the real test set (clean,
at artifact severities, with Grad-CAM where asked), its check on real MRI, a spine_cgan run on a real pool, its
synthetic pool, and the quality report of that pool judged by the real-only model. :func:`build_stage` runs the
builder of a stage's kind (:data:`BUILDERS`) from the stage record and the study's settings alone, in whichever
process or machine the executor chose.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from volgan.data.datalist import Case, read_datalist, write_datalist
from volgan.data.files import strict_json, write_text
from volgan.study.data import real_cases
from volgan.study.profiles import StudyProfile
from volgan.study.records import CaseEvaluation, PlannedArm
from volgan.study.stages import Progress, Stage, StudySettings, run_bundle

FINAL_MODEL = "model_final.pt"  # written by spine_segcls itself (its final-model CheckpointSaver)


def train_segcls(folder: Path, out: Path, config: dict, progress: Progress) -> None:
    """Build a run stage: the arm's real and synthetic cases as a datalist in ``folder``, then spine_segcls trained on
    them there (``folder/models/model_final.pt``).

    Parameters
    ----------
    folder : Path
        the stage's fresh folder.
    out : Path
        the study's output folder (its ``stages/``).
    config : dict
        the run's training configuration (:func:`volgan.study.plan.training_config`).
    progress : Progress
        the study's progress display (a bar per epoch).
    """
    pool, _ = real_cases(out)
    by_name = {c.name: c for c in pool}
    cases = [replace(by_name[n], split="training") for n in config["real"]]
    if config["synthetic"]:
        synth = read_datalist(out / "stages" / f"synth-{config['gan_pool']}" / "synthetic")
        named = {c.name: c for c in synth.cases}
        cases += [replace(named[n], split="training") for n in config["synthetic"]]
    cases.sort(key=lambda c: (c.source, c.name))
    write_datalist(cases, folder)
    size, spacing = config["size"], config["spacing"]
    patch = [size] * 3 if isinstance(size, int) else list(size)
    spacing = [spacing] * 3 if isinstance(spacing, (int, float)) else list(spacing)
    with progress.bar(config["epochs"], "segcls") as bar:
        run_bundle("spine_segcls", folder, {
            "dataset_dir": str(folder), "max_epochs": config["epochs"], "patch": patch, "spacing": spacing,
            "channels": config["channels"], "batch_size": config["batch_size"], "augment": config["augment"],
            "seed": config["seed"], "learning_rate": config["learning_rate"],
            "val_fraction": 0.0, "val_interval": config["epochs"], "num_workers": config["loader_workers"]}, bar)

@functools.lru_cache(maxsize=2048)  # every profile's whole test set at every severity (paper: 400 × 4 at 64³, 2 GB)
def test_volume(image: Path, label: Path, severity: int):
    """A test case's (image with artifacts of ``severity``, label map). The artifacts' random draws depend
    only on the case and the severity, so every model sees the same corrupted test set.

    Parameters
    ----------
    image : Path
        the test image file.
    label : Path
        its label map file.
    severity : int
        the artifacts' strength, 0–3.

    Returns
    -------
    tuple[Volume, Volume]
        the (corrupted) image and the label map.
    """
    from volgan.data.io import Volume, read_volume
    from volgan.transforms import corrupt

    volume, reference = read_volume(image), read_volume(label, label=True)
    seed = int.from_bytes(hashlib.sha256(f"{Path(image).name}:{severity}".encode()).digest()[:4], "little")
    return Volume(corrupt(volume.array, volume.affine, severity, seed), volume.affine), reference


def gradcam_tumor_share(model, prediction, image, label, dilation: int = 2, precision: str = "fp32") -> float:
    """Share of the Grad-CAM heat map's mass (:func:`volgan.segcls.gradcam.gradcam_volume`, tumor class) that lies in
    the reference tumor dilated by ``dilation`` voxels (6-connectivity): Ainapure et al.'s "attention on tumor regions"
    as a number in [0, 1]. NaN for a volume without a tumor or a map without mass.

    Parameters
    ----------
    model : LoadedModel
        the network and its preprocessing.
    prediction : Prediction
        its prediction on ``image``.
    image : Volume
        the test image.
    label : Volume
        its reference label map.
    dilation : int
        voxels the tumor is widened by.
    precision : str
        ``"fp32"`` or ``"bf16"``.

    Returns
    -------
    float
        the share, in [0, 1], or NaN.
    """
    from scipy import ndimage

    from volgan.labels import TUMOR_LABEL
    from volgan.segcls.gradcam import gradcam_volume

    tumor = label.array == TUMOR_LABEL
    if not tumor.any():
        return math.nan
    region = ndimage.binary_dilation(tumor, ndimage.generate_binary_structure(3, 1), iterations=dilation)
    heat = gradcam_volume(model, prediction, image, precision=precision).array.astype(np.float64)
    total = float(heat.sum())
    return float(heat[region].sum() / total) if total > 0 else math.nan


def evaluate_model(model_path: Path, test: list[Case], severities: tuple[int, ...], gradcam: bool = False
                   ) -> list[CaseEvaluation]:
    """Per test case and artifact severity: tumor_type probabilities, the segmentation's tumor evidence (mm³) and
    per-label Dice and IoU; with ``gradcam`` also ``gradcam_tumor_share`` (:func:`gradcam_tumor_share`) on the
    clean tumor-bearing volumes. The network runs in bfloat16 where spine_segcls trains in it by default (a CPU
    with native bfloat16: 30 ms a 32³ volume against 170 ms in float32 here), for every arm alike.

    Parameters
    ----------
    model_path : Path
        the trained model (``model_final.pt``).
    test : list[Case]
        the test cases.
    severities : tuple[int, ...]
        the artifact strengths to test at (0: clean).
    gradcam : bool
        add the Grad-CAM tumor share.

    Returns
    -------
    list[CaseEvaluation]
        one per case and severity: probabilities (4,), tumor evidence (mm³), Dice and IoU per label 1–5 (and the
        Grad-CAM tumor share).
    """
    from volgan.evaluation.metrics import confusion_counts, dice_iou
    from volgan.segcls.predict import load_model, predict

    model = load_model(model_path)
    precision = evaluation_precision(model.device)
    rows = []
    for case in test:
        for severity in severities:
            image, label = test_volume(case.image, case.label, severity)
            prediction = predict(model, image, precision=precision)
            counts = confusion_counts(prediction.label.array, label.array)
            scores = {k: dice_iou(v) for k, v in counts.items()}
            share = None
            if gradcam and severity == 0:
                share = gradcam_tumor_share(model, prediction, image, label, precision=precision)
                share = math.nan if share is None else float(share)
            rows.append(CaseEvaluation(case=case.name, tumor_type=int(case.tumor_type), severity=severity,
                                       probabilities=tuple(round(float(p), 6) for p in prediction.type_probabilities),
                                       tumor_evidence_mm3=round(float(prediction.tumor_evidence_mm3), 6),
                                       dice={k: d for k, (d, _) in scores.items()},
                                       iou={k: i for k, (_, i) in scores.items()}, gradcam_tumor_share=share))
    return rows


def evaluate_run(folder: Path, out: Path, run_key: str, severities: tuple[int, ...], gradcam: bool = False) -> None:
    """Build an evaluation stage: the run's final model on the real test set (:func:`evaluate_model`), written to
    ``folder/eval.json``.

    Parameters
    ----------
    folder : Path
        the stage's fresh folder.
    out : Path
        the study's output folder.
    run_key : str
        the run stage evaluated.
    severities : tuple[int, ...]
        the artifact strengths to test at.
    gradcam : bool
        add the Grad-CAM tumor share.
    """
    _, test = real_cases(out)
    rows = evaluate_model(out / "stages" / run_key / "models" / FINAL_MODEL, test, severities, gradcam)
    write_text(folder / "eval.json", json.dumps(strict_json([row.to_dict() for row in rows])) + "\n")


def check_run_on_real(folder: Path, out: Path, run_key: str, scans: list) -> None:
    """Build a real-MRI check stage: the run's final model on the real scans
    (:func:`volgan.evaluation.real_mri.write_check`), in the precision its evaluation uses.

    Parameters
    ----------
    folder : Path
        the stage's fresh folder.
    out : Path
        the study's output folder.
    run_key : str
        the run stage checked.
    scans : list[RealScan]
        the real scans.
    """
    from volgan.evaluation.real_mri import write_check
    from volgan.segcls.predict import default_device

    model = out / "stages" / run_key / "models" / FINAL_MODEL
    write_check(folder, model, scans, evaluation_precision(default_device()))


def evaluation_precision(device) -> str:
    """The precision the study evaluates every model in: bfloat16 where spine_segcls trains in it by default (a CPU
    with native bfloat16), float32 elsewhere (a GPU included), for every arm alike.

    Parameters
    ----------
    device : torch.device
        where the model runs.

    Returns
    -------
    str
        ``"bf16"`` or ``"fp32"``.
    """
    from volgan.training import bf16_autocast

    return "bf16" if bf16_autocast("auto", device) else "fp32"


def train_gan(folder: Path, out: Path, names: tuple[str, ...], profile: StudyProfile, progress: Progress) -> None:
    """Build a GAN stage: the named real cases as a datalist in ``folder/data``, then spine_cgan trained on them
    (``folder/models/generator.pt``).

    Parameters
    ----------
    folder : Path
        the stage's fresh folder.
    out : Path
        the study's output folder.
    names : tuple[str, ...]
        the real cases the GAN trains on.
    profile : StudyProfile
        the study profile (the GAN's size, epochs and recipe).
    progress : Progress
        the study's progress display.
    """
    pool, _ = real_cases(out)
    chosen = [c for c in pool if c.name in set(names)]
    data = folder / "data"
    data.mkdir(exist_ok=True)
    write_datalist(chosen, data)
    overrides = gan_overrides(profile, data, len(chosen))
    with progress.bar(overrides["max_epochs"], "cgan") as bar:
        run_bundle("spine_cgan", folder, overrides, bar)


def gan_overrides(profile: StudyProfile, data: Path, n_cases: int) -> dict:
    """spine_cgan's overrides for the profile's GAN on the ``n_cases`` of the datalist folder ``data``.

    Parameters
    ----------
    profile : StudyProfile
        the study profile.
    data : Path
        the GAN's datalist folder.
    n_cases : int
        the number of training cases (sets the epochs from the profile's presentations).

    Returns
    -------
    dict
        the bundle's command-line overrides.
    """
    size = profile.size if isinstance(profile.size, int) else list(profile.shape)
    return {"dataset_dir": str(data), "max_epochs": profile.gan_epochs(n_cases), "size": size,
            "spacing": list(profile.voxel_mm), "base": profile.gan_base, "batch_size": profile.gan_batch_size,
            "seed": profile.seed, "monitor_interval": 10**6}


def synthesize_pool(folder: Path, out: Path, pool: int, profile: StudyProfile) -> None:
    """Build a synthesis stage: the profile's number of synthetic cases from the GAN of real pool ``pool``, into
    ``folder/synthetic`` (for real-deformed label maps, from that GAN's own training maps).

    Parameters
    ----------
    folder : Path
        the stage's fresh folder.
    out : Path
        the study's output folder.
    pool : int
        the real-pool size whose GAN synthesizes.
    profile : StudyProfile
        the study profile (number of cases, seed, label source).
    """
    from volgan.gan.synth import load_synthesizer, synthesize

    deformed = profile.label_source == "real-deformed"
    synthesize(load_synthesizer(out / "stages" / f"gan-{pool}"), folder / "synthetic", n_cases=profile.synthetic,
               seed=profile.seed, label_source=profile.label_source,
               pool=out / "stages" / f"gan-{pool}" / "data" if deformed else None)  # the GAN's own pool, no test map


def judge_synthetic(folder: Path, out: Path, pool: int, model_run: str) -> None:
    """Build a quality stage: the synthetic-quality report (:func:`volgan.evaluation.quality.quality_report`) of
    ``synth-POOL`` against the real data, judged by the model of ``model_run``, into ``folder/quality``.

    Parameters
    ----------
    folder : Path
        the stage's fresh folder.
    out : Path
        the study's output folder.
    pool : int
        the real-pool size whose synthetic set is judged.
    model_run : str
        the run stage whose model is the judge (the real-only run).
    """
    from volgan.evaluation.quality import quality_report

    quality_report(out / "stages" / "data" / "real", out / "stages" / f"synth-{pool}" / "synthetic",
                   folder / "quality", model=out / "stages" / model_run / "models" / FINAL_MODEL)


def check_scans(settings: StudySettings) -> list:
    """The real scans every model of the study is checked on: those shipped in ``data/real`` and the user's.

    Parameters
    ----------
    settings : StudySettings
        the study's settings.

    Returns
    -------
    list[volgan.evaluation.real_mri.RealScan]
        the scans.
    """
    from volgan.evaluation.real_mri import shipped_scans, user_scans

    scans = shipped_scans()
    if settings.real_check is not None:
        scans += user_scans(settings.real_check)
    return scans


def _build_data(folder: Path, settings: StudySettings, progress: Progress) -> None:
    from volgan.study.data import phantom_data, user_data

    if settings.real is None:
        phantom_data(folder, settings.profile)
    else:
        user_data(folder, settings.real, settings.profile)


def _build_report(folder: Path, settings: StudySettings, progress: Progress, arms: list[dict]) -> None:
    from volgan.study.report import write_study_report

    write_study_report(folder, settings.out, settings.profile, [PlannedArm.from_dict(a) for a in arms], settings.real)


BUILDERS = {
    "data": _build_data,
    "gan": lambda f, s, p, names: train_gan(f, s.out, tuple(names), s.profile, p),
    "synth": lambda f, s, p, pool: synthesize_pool(f, s.out, pool, s.profile),
    "run": lambda f, s, p, config: train_segcls(f, s.out, config, p),
    "eval": lambda f, s, p, run, severities, gradcam: evaluate_run(f, s.out, run, tuple(severities), gradcam),
    "real": lambda f, s, p, run: check_run_on_real(f, s.out, run, check_scans(s)),
    "quality": lambda f, s, p, pool, model_run: judge_synthetic(f, s.out, pool, model_run),
    "report": _build_report,
}
"""Each stage kind's builder: ``builder(folder, settings, progress, **stage.args)``."""


def build_stage(stage: Stage, folder: Path, settings: StudySettings, progress: Progress) -> None:
    """Build ``stage`` into ``folder`` with the builder of its kind.

    Parameters
    ----------
    stage : Stage
        the stage record.
    folder : Path
        the stage's folder (empty: every attempt starts afresh).
    settings : StudySettings
        the study's settings.
    progress : Progress
        the progress display (bars for training; a quiet one in a worker).
    """
    BUILDERS[stage.kind](folder, settings, progress, **stage.args)
