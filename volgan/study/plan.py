"""The study's plan: its arms (ratio sweep and augmentation comparison, per seed), the spine_segcls training
configuration of each, and the list of stages (data, GANs, synthesis, runs, evaluations, quality, report)
with what each depends on. Runs that share a training set, recipe and seed are planned once.
"""

from __future__ import annotations

import math
from dataclasses import asdict

from volgan.data.datalist import Case
from volgan.evaluation.real_mri import scan_digest
from volgan.study.build import FINAL_MODEL, check_scans
from volgan.study.data import data_fingerprint, pool_subset, real_cases
from volgan.study.profiles import ARMS, GRADCAM_ARMS, SHARES, StudyProfile
from volgan.study.records import Arm, PlannedArm
from volgan.study.stages import Stage, StudySettings, digest

# --------------------------------------------------------------------------------------------------------
# Arms


def _names(cases: list[Case]) -> tuple[str, ...]:
    return tuple(sorted(c.name for c in cases))


def plan_arms(profile: StudyProfile, pool: list[Case], synthetic: dict[int, list[str]]) -> list[Arm]:
    """Every arm and seed: the 11-share sweep at ``sweep_size`` and the four-arm comparison per real-pool size
    (GAN arms add as many synthetic volumes as there are real ones, from the GAN of that pool).

    Parameters
    ----------
    profile : StudyProfile
        the study profile.
    pool : list[Case]
        the real pool.
    synthetic : dict[int, list[str]]
        {real-pool size: names of that GAN's synthetic cases}.

    Returns
    -------
    list[Arm]
        the arms (section, arm name, seed, real and synthetic case names, augmentation, the GAN's pool, synthetic
        share).
    """
    from volgan.data.mixing import mix_cases

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
    """The run stage of an arm: its key (arms that agree share it), training configuration and dependencies.

    Parameters
    ----------
    arm : Arm
        the arm.
    profile : StudyProfile
        the study profile.

    Returns
    -------
    tuple[str, dict, tuple[str, ...]]
        ``run-`` and a 12-digit hash, the configuration, the stages it needs.
    """
    config = training_config(arm, profile)
    deps = ("data",) + ((f"synth-{arm.gan_pool}",) if arm.synthetic else ())
    return "run-" + digest([config, deps])[:12], config, deps


def real_key(run: str) -> str:
    """The real-MRI check stage of the run stage ``run``.

    Parameters
    ----------
    run : str
        a run stage's key.

    Returns
    -------
    str
        ``real-`` and the run's hash.
    """
    return "real-" + run.removeprefix("run-")


def eval_key(run: str) -> str:
    """The evaluation stage of the run stage ``run``.

    Parameters
    ----------
    run : str
        a run stage's key.

    Returns
    -------
    str
        ``eval-`` and the run's hash.
    """
    return "eval-" + run.removeprefix("run-")


def training_config(arm: Arm, profile: StudyProfile) -> dict:
    """What a segmenter-classifier run depends on (arms that agree share one run). Every case of the arm trains
    (the bundle holds none out), so ``epochs`` × the arm's size is the profile's presentations, rounded up.

    Parameters
    ----------
    arm : Arm
        the arm.
    profile : StudyProfile
        the study profile.

    Returns
    -------
    dict
        the real and synthetic case names, the GAN's pool, the augmentation (and the classical recipe), seed, epochs,
        field size and spacing, network widths, batch size, learning rate and loader workers.
    """
    from volgan.transforms import CLASSICAL_RECIPE

    epochs = max(1, math.ceil(profile.presentations / max(arm.n_train, 1)))
    config = {"real": arm.real, "synthetic": arm.synthetic, "gan_pool": arm.gan_pool, "augment": arm.augment,
              "seed": arm.seed, "epochs": epochs, "size": profile.size, "spacing": profile.spacing,
              "channels": list(profile.channels), "batch_size": profile.batch_size,
              "learning_rate": profile.learning_rate,
              "loader_workers": profile.loader_workers if arm.augment != "none" else 0}  # none: no gain measured
    if arm.augment == "classical":  # the preset lives in volgan, not in the bundle's config
        config["augment_recipe"] = CLASSICAL_RECIPE
    return config


# --------------------------------------------------------------------------------------------------------
# The plan


def base_stages(settings: StudySettings) -> list[Stage]:
    """The stages every study starts with: the data stage (phantoms, or the user's datalist resampled onto the profile's
    field).

    Parameters
    ----------
    settings : StudySettings
        the study's settings (profile, user data).

    Returns
    -------
    list[Stage]
        the data stage.
    """
    profile = settings.profile
    if settings.real is None:
        data_config = {"phantom": {k: v for k, v in asdict(profile).items()
                                   if k in ("size", "spacing", "real_pool", "test", "seed", "anatomy_field_mm")}}
    else:
        data_config = {"datalist": str(settings.real.resolve()), "fingerprint": data_fingerprint(settings.real),
                       "test": profile.test, "seed": profile.seed, "size": profile.size, "spacing": profile.spacing,
                       "field": "foreground-centred"}
    return [Stage("data", "data", "real data: training pool and balanced test set", data_config, ())]


def evaluated_runs(arms: list[Arm], profile: StudyProfile) -> tuple[set[str], set[str]]:
    """The run keys whose evaluation adds Grad-CAM (Ainapure et al.'s claim, tested on scarce data: the smallest pool's
    none and GAN arms) and those evaluated at every artifact severity (the augmentation comparison's arms).

    Parameters
    ----------
    arms : list[Arm]
        every arm.
    profile : StudyProfile
        the study profile.

    Returns
    -------
    tuple[set[str], set[str]]
        the run keys with Grad-CAM, and those evaluated at every severity.
    """
    scarce = min(profile.pool_sizes)
    gradcam = {run_key(a, profile)[0] for a in arms
               if a.section == "augmentation" and a.arm in GRADCAM_ARMS and a.real_pool == scarce}
    robustness = {run_key(a, profile)[0] for a in arms if a.section == "augmentation"}
    return gradcam, robustness


# Expected work per unit of each stage kind, in spine_segcls presentations without augmentation (6.5 ms each on an
# H100): a GAN presentation 7.1, a classical-preset presentation 4.6, a synthetic volume 58, a test volume evaluated
# clean 8 or at four conditions 16, a synthetic volume judged 175 (BENCHMARKS.md, "The paper profile, measured and
# projected"). Only their order matters: they decide which ready stage starts first (stages.critical_first).
COST_PER_UNIT = {"gan": 7.1, "run": 1.0, "run-classical": 4.6, "synth": 58.0, "eval": 8.0, "eval-robust": 16.0,
                 "real": 8.0, "quality": 175.0}


def stage_cost(kind: str, units: float) -> float:
    """The expected work of a stage: ``units`` (presentations, or volumes) × :data:`COST_PER_UNIT` of ``kind``.

    Parameters
    ----------
    kind : str
        a key of :data:`COST_PER_UNIT`.
    units : float
        presentations (``gan``, ``run``, ``run-classical``) or volumes (the others).

    Returns
    -------
    float
        the cost, in spine_segcls presentations.
    """
    return COST_PER_UNIT[kind] * units


def plan_study(settings: StudySettings) -> list[Stage]:
    """Every stage of the study in running order (needs the data stage finished for case names).

    Parameters
    ----------
    settings : StudySettings
        the study's settings.

    Returns
    -------
    list[Stage]
        every stage, dependencies first.
    """
    from volgan.gan.synth import DEFAULT_PLACEMENT

    profile, out = settings.profile, settings.out
    pool, test = real_cases(out)
    stages: list[Stage] = []
    gan_config = {k: v for k, v in asdict(profile).items()
                  if k in ("size", "spacing", "gan_presentations", "gan_base", "gan_batch_size", "seed")}
    synthetic: dict[int, list[str]] = {}
    for n in profile.pool_sizes:
        names = _names(pool_subset(pool, n, profile.seed))
        stages.append(Stage(f"gan-{n}", "gan", f"spine_cgan on {n} real volumes", {"pool": names, **gan_config},
                            ("data",), {"names": names},
                            cost=stage_cost("gan", profile.gan_epochs(n) * n)))
        stages.append(Stage(f"synth-{n}", "synth", f"{profile.synthetic} synthetic volumes from gan-{n}",
                            {"n": profile.synthetic, "seed": profile.seed, "label_source": profile.label_source,
                             "placement": DEFAULT_PLACEMENT},
                            (f"gan-{n}",), {"pool": n}, cost=stage_cost("synth", profile.synthetic)))
        synthetic[n] = [f"synth_{i:05d}" for i in range(profile.synthetic)]
    arms = plan_arms(profile, pool, synthetic)
    runs: dict[str, Stage] = {}
    scans = check_scans(settings)
    scans_config = {"scans": scan_digest(scans), "model": FINAL_MODEL, "precision": "as evaluation"}
    gradcam_runs, robustness_runs = evaluated_runs(arms, profile)
    for arm in arms:
        key, config, deps = run_key(arm, profile)
        if key in runs:
            continue
        runs[key] = Stage(key, "run", f"spine_segcls {arm.section} {arm.arm}"
                          + (f" (real pool {arm.real_pool})" if arm.real_pool else "") + f", seed {arm.seed}",
                          config, deps, {"config": config},
                          cost=stage_cost("run-classical" if arm.augment == "classical" else "run",
                                          config["epochs"] * arm.n_train))
        evaluation, gradcam = eval_key(key), key in gradcam_runs
        severities = [0, 1, 2, 3] if key in robustness_runs else [0]  # only the comparison's arms are compared
        runs[evaluation] = Stage(evaluation, "eval", f"evaluate {key} on {len(test)} test volumes × "
                                 f"{len(severities)} condition(s)" + (" and Grad-CAM" if gradcam else ""),
                                 {"test": _names(test), "severities": severities, "model": FINAL_MODEL,
                                  **({"gradcam": "tumor share, dilation 2"} if gradcam else {})},
                                 ("data", key), {"run": key, "severities": severities, "gradcam": gradcam},
                                 cost=stage_cost("eval-robust" if len(severities) > 1 else "eval", len(test)))
        if scans:
            runs[real_key(key)] = Stage(real_key(key), "real", f"check {key} on {len(scans)} real scan(s)",
                                        scans_config, (key,), {"run": key}, cost=stage_cost("real", len(scans)))
    stages += list(runs.values())
    full = max(profile.pool_sizes)
    reference = next(a for a in arms if a.section == "sweep" and a.share == 0.0 and a.seed == 0)
    ref_key = run_key(reference, profile)[0]
    stages.append(Stage("quality", "quality", f"volgan quality of synth-{full}", {"model": ref_key},
                        ("data", f"synth-{full}", ref_key), {"pool": full, "model_run": ref_key},
                        cost=stage_cost("quality", profile.synthetic)))
    eval_keys = sorted(k for k in runs if k.startswith(("eval-", "real-")))
    arms_doc = []
    for a in arms:
        key = run_key(a, profile)[0]
        arms_doc.append(PlannedArm(**asdict(a), run=key, eval=eval_key(key), real_check=real_key(key)).to_dict())
    stages.append(Stage("report", "report", "study report", {"arms": arms_doc, "profile": asdict(profile)},
                        tuple(["quality", *eval_keys]), {"arms": arms_doc}))
    return stages
