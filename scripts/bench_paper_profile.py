"""The paper profile's cost, measured in pieces on the machine at hand and projected to the whole study.

    python scripts/bench_paper_profile.py measure --json RESULTS.json [--profile paper] [--cases 64] ...
    python scripts/bench_paper_profile.py project RESULTS.json [--write]

``measure`` runs, at the profile's volume size, spacing, widths and batch sizes, each kind of stage the study
runs, on a sample: phantoms, spine_cgan (``--gan-epochs`` epochs on ``--cases`` volumes), synthesis, quality,
spine_segcls without augmentation (fp32, the bundle's default on CUDA, and bf16 autocast) and with the classical
preset (loader with no worker processes and with ``--workers``), and the evaluation of one model on ``--test``
volumes clean and at the three artifact severities with Grad-CAM. Every stage goes through the study's own
functions (``run_bundle``, ``gan_overrides``, ``synthesize``, ``quality_report``, ``evaluate_model``). A rate is
the time per volume presentation of the epochs between the first (which fills the cache and warms the kernels)
and the last (which holds the bundle's final validation); what a run spends beside them (start, cache, the
final validation) is kept per training volume. Results are written to ``--json`` after every step, so a run
stopped early keeps what it had.

``project`` counts the stages of the full study (``volgan.study.plan.plan_arms`` and ``run_key``, so arms that share
a run are counted once) and multiplies each by its measured rate: the projected wall time of ``volgan study
--profile NAME`` on that machine, stage kind by stage kind, against the 6-hour target. ``--write`` puts it into
BENCHMARKS.md, naming the machine that measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from benchmarks import write_section

from volgan.data.datalist import Case, read_datalist, write_datalist
from volgan.data.files import write_text
from volgan.study.build import FINAL_MODEL, evaluate_model, gan_overrides, test_volume
from volgan.study.plan import evaluated_runs, plan_arms, run_key
from volgan.study.profiles import PROFILES, StudyProfile
from volgan.study.stages import Stage, critical_first, run_bundle

SECTION = "The paper profile, measured and projected"
TARGET_HOURS = 6.0


class EpochClock:
    """Stands in for :func:`volgan.study.stages.run_bundle`'s progress bar: the wall time at the start of training and
    at the end of every epoch (seconds, ``time.perf_counter``)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def reset(self, total: int) -> None:
        self.marks = [time.perf_counter()]

    def update(self, n: int) -> None:
        if n:
            self.marks.append(time.perf_counter())


def machine_text() -> str:
    import platform

    import torch

    gpu = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, {gpu}")


def timed_run(bundle: str, folder: Path, overrides: dict, volumes: int) -> dict:
    """Run a bundle and return its timing: seconds in all, seconds per presentation over the epochs between the
    first and the last (``volumes`` presentations per epoch), the rest per volume, and the GPU's peak memory
    (GiB; NaN without one)."""
    import torch

    folder.mkdir(parents=True)
    clock = EpochClock()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_bundle(bundle, folder, overrides, clock)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else math.nan
    epochs = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    steady = epochs[1:-1] if len(epochs) > 2 else epochs[1:] or epochs  # the last holds the final validation
    per_presentation = sum(steady) / (len(steady) * volumes)
    overhead = max(0.0, seconds - per_presentation * volumes * len(epochs))
    return {"seconds": round(seconds, 3), "epochs": [round(e, 3) for e in epochs],
            "per_presentation_s": per_presentation, "overhead_per_volume_s": overhead / volumes,
            "gpu_peak_gib": round(peak, 2)}


def finite_log(folder: Path) -> bool:
    """Whether the bundle finished without volgan's non-finite stop (its log would say so)."""
    text = (folder / "train.log").read_text(encoding="utf-8", errors="replace")
    return "non-finite" not in text.lower() and (folder / "models" / FINAL_MODEL).is_file()


def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="paper_bench_") as tmp:  # the sample's volumes and runs, removed after
        measure_in(args, Path(tmp))


def measure_in(args: argparse.Namespace, work: Path) -> None:
    import torch

    from volgan.data.phantom import PhantomConfig, make_dataset
    from volgan.evaluation.quality import quality_report
    from volgan.gan.synth import load_synthesizer, synthesize

    profile = PROFILES[args.profile]
    if args.size:
        profile = replace(profile, size=args.size, spacing=args.spacing or profile.spacing)
    results: dict = {"profile": asdict(profile), "machine": machine_text(), "sample": vars(args).copy()}
    results["sample"].pop("func", None)
    out = Path(args.json)

    def save(step: str, value) -> None:
        results[step] = value
        write_text(out, json.dumps(results, indent=1) + "\n")
        print(f"{step}: {json.dumps(value)[:300]}", flush=True)

    save("started", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    n, n_test = args.cases, args.test
    workers = os.cpu_count() or 1
    config = PhantomConfig(size=(profile.size,) * 3, spacing=(profile.spacing,) * 3,
                           anatomy_field_mm=profile.anatomy_field_mm)
    start = time.perf_counter()
    make_dataset(work / "real", n + n_test, config, seed=profile.seed, test_fraction=n_test / (n + n_test),
                 workers=workers)
    save("phantoms", {"volumes": n + n_test, "workers": workers,
                      "per_volume_s": (time.perf_counter() - start) / (n + n_test)})
    real = read_datalist(work / "real")
    train, test = real.split("training"), real.split("test")
    data = work / "gan_data"
    data.mkdir()
    write_datalist(train, data)

    steps = set(args.steps.split(","))
    gan_folder = work / "gan"
    if steps & {"gan", "quality"}:
        overrides = {**gan_overrides(profile, data, n), "max_epochs": args.gan_epochs}
        gan = timed_run("spine_cgan", gan_folder, overrides, n)
        save("gan", {**gan, "finite": (gan_folder / "models").is_dir()})
        start = time.perf_counter()
        synthesize(load_synthesizer(gan_folder), work / "synthetic", n_cases=n, seed=profile.seed,
                   label_source=profile.label_source, pool=data)
        save("synth", {"volumes": n, "per_volume_s": (time.perf_counter() - start) / n})

    segcls_data = work / "segcls_data"
    segcls_data.mkdir()
    write_datalist([replace(c, split="training") for c in train], segcls_data)
    s, sp = profile.size, profile.spacing

    def segcls(name: str, presentations: int, augment: str, **extra) -> Path:
        epochs = max(2, math.ceil(presentations / n))
        folder = work / name
        timing = timed_run("spine_segcls", folder, {
            "dataset_dir": str(segcls_data), "max_epochs": epochs, "patch": [s, s, s], "spacing": [sp] * 3,
            "channels": list(profile.channels), "batch_size": profile.batch_size, "augment": augment,
            "seed": 0, "learning_rate": profile.learning_rate, "val_fraction": 0.0, "val_interval": epochs,
            **extra}, n)
        save(name, {**timing, "augment": augment, **extra, "finite": finite_log(folder)})
        return folder

    worker_counts = sorted({0, args.workers})
    for workers in worker_counts:
        model = segcls(f"segcls_none_fp32_w{workers}", args.segcls_presentations, "none", num_workers=workers)
    if torch.cuda.is_available() and "bf16" in steps:
        segcls(f"segcls_none_bf16_w{args.workers}", args.segcls_presentations, "none", amp=True,
               num_workers=args.workers)
    if "classical" in steps:
        for workers in worker_counts:
            segcls(f"segcls_classical_fp32_w{workers}", args.classical_presentations, "classical",
                   num_workers=workers)

    final = model / "models" / FINAL_MODEL
    test_volume.cache_clear()
    start = time.perf_counter()
    evaluate_model(final, test, (0,))
    save("eval_clean", {"volumes": len(test), "per_volume_s": (time.perf_counter() - start) / len(test)})
    for name, gradcam in (("eval_robust_gradcam_cold", True), ("eval_robust_gradcam", True), ("eval_robust", False)):
        if name.endswith("cold"):  # the artifacts computed afresh; after it, the study's cache holds them
            test_volume.cache_clear()
        start = time.perf_counter()
        evaluate_model(final, test, (0, 1, 2, 3), gradcam=gradcam)
        save(name, {"volumes": len(test), "per_volume_s": (time.perf_counter() - start) / len(test)})

    if "quality" in steps:
        start = time.perf_counter()
        quality_report(work / "real", work / "synthetic", work / "quality", model=final)
        save("quality", {"synthetic": n, "per_synthetic_volume_s": (time.perf_counter() - start) / n})
    save("finished", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def planned_arms(profile: StudyProfile) -> tuple[list, set[str]]:
    """The full study's arms on a phantom pool of the profile's size (``volgan.study.plan.plan_arms``), and the run
    keys evaluated at every artifact severity."""
    from volgan.data.phantom import PhantomConfig, tumor_type_for

    phantom = PhantomConfig()
    types = [tumor_type_for(profile.seed, i, phantom.tumor_fraction, phantom.types) for i in range(profile.real_pool)]
    pool = [Case(f"case_{i:05d}", Path("."), Path("."), t) for i, t in enumerate(types)]
    synthetic = {n: [f"synth_{i:05d}" for i in range(profile.synthetic)] for n in profile.pool_sizes}
    arms = plan_arms(profile, pool, synthetic)
    return arms, evaluated_runs(arms, profile)[1]


def stage_counts(profile: StudyProfile) -> dict:
    """What the full study runs: GAN presentations, synthetic volumes, spine_segcls runs (presentations and
    training volumes, by augmentation) and evaluations (clean, or at every artifact severity: ``robust``)."""
    arms, robustness = planned_arms(profile)
    runs: dict[str, dict] = {}
    for arm in arms:
        key, config, _ = run_key(arm, profile)
        runs.setdefault(key, {"presentations": config["epochs"] * arm.n_train, "volumes": arm.n_train,
                              "augment": arm.augment, "robust": key in robustness})
    return {"phantoms": profile.real_pool + profile.test,
            "gan_presentations": sum(profile.gan_epochs(n) * n for n in profile.pool_sizes),
            "gans": len(profile.pool_sizes), "synthetic": profile.synthetic * len(profile.pool_sizes),
            "runs": list(runs.values()), "test": profile.test}


def project(results: dict, profile: StudyProfile, workers: int) -> dict[str, float]:
    """Projected seconds of the full study by stage kind, from measured rates: spine_segcls in float32 (its
    default on CUDA), its loader with ``workers`` processes for the classical preset and none without
    augmentation (as :func:`volgan.study.plan.training_config` sets it); the corrupted test volumes computed once (the
    study caches them) and each robustness evaluation at the rate with that cache warm."""
    counts = stage_counts(profile)
    seg = {"none": results["segcls_none_fp32_w0"], "classical": results[f"segcls_classical_fp32_w{workers}"]}
    gan, test = results["gan"], counts["test"]
    robust = [r for r in counts["runs"] if r["robust"]]
    corrupt_once = test * max(0.0, results["eval_robust_gradcam_cold"]["per_volume_s"]
                              - results["eval_robust_gradcam"]["per_volume_s"]) if robust else 0.0
    return {
        "data (phantoms)": counts["phantoms"] * results["phantoms"]["per_volume_s"],
        "gan": counts["gan_presentations"] * gan["per_presentation_s"]
               + counts["gans"] * gan["overhead_per_volume_s"] * results["sample"]["cases"],
        "synth": counts["synthetic"] * results["synth"]["per_volume_s"],
        "run (spine_segcls)": sum(r["presentations"] * seg[r["augment"]]["per_presentation_s"]
                                  + r["volumes"] * seg[r["augment"]]["overhead_per_volume_s"]
                                  for r in counts["runs"]),
        "eval": corrupt_once + sum(test * results["eval_robust_gradcam" if r["robust"] else "eval_clean"]
                                   ["per_volume_s"] for r in counts["runs"]),
        "quality": profile.synthetic * results["quality"]["per_synthetic_volume_s"],
    }


def stage_graph(results: dict, profile: StudyProfile, workers: int) -> list[tuple[Stage, float]]:
    """The study's stages after the data stage, as ``volgan study`` plans them (with the expected costs its driver
    orders them by, :func:`volgan.study.plan.stage_cost`), each with its projected seconds from the measured rates of
    :func:`project`. The real-MRI check of each model is counted as a clean evaluation of two volumes (not measured
    on a GPU); the report as nothing."""
    from volgan.study.plan import eval_key, real_key, stage_cost

    seg = {"none": results["segcls_none_fp32_w0"], "classical": results[f"segcls_classical_fp32_w{workers}"]}
    gan, test = results["gan"], profile.test
    clean = results["eval_clean"]["per_volume_s"]
    robust_rate = results["eval_robust_gradcam"]["per_volume_s"]
    corrupt_once = test * max(0.0, results["eval_robust_gradcam_cold"]["per_volume_s"] - robust_rate)
    graph: list[tuple[Stage, float]] = []

    def add(key: str, kind: str, deps: tuple[str, ...], cost: float, seconds: float) -> None:
        graph.append((Stage(key, kind, key, {}, tuple(d for d in deps if d != "data"), cost=cost), seconds))

    for n in profile.pool_sizes:
        presentations = profile.gan_epochs(n) * n
        add(f"gan-{n}", "gan", (), stage_cost("gan", presentations), presentations * gan["per_presentation_s"]
            + gan["overhead_per_volume_s"] * results["sample"]["cases"])
        add(f"synth-{n}", "synth", (f"gan-{n}",), stage_cost("synth", profile.synthetic),
            profile.synthetic * results["synth"]["per_volume_s"])
    arms, robustness = planned_arms(profile)
    seen: set[str] = set()
    first_robust = True
    for arm in arms:
        key, config, deps = run_key(arm, profile)
        if key in seen:
            continue
        seen.add(key)
        rate, presentations = seg[arm.augment], config["epochs"] * arm.n_train
        add(key, "run", deps, stage_cost("run-classical" if arm.augment == "classical" else "run", presentations),
            presentations * rate["per_presentation_s"] + arm.n_train * rate["overhead_per_volume_s"])
        robust = key in robustness
        add(eval_key(key), "eval", (key,), stage_cost("eval-robust" if robust else "eval", test),
            test * (robust_rate if robust else clean) + (corrupt_once if robust and first_robust else 0.0))
        first_robust = first_robust and not robust
        add(real_key(key), "real", (key,), stage_cost("real", 2), 2 * clean)
    reference = next(a for a in arms if a.section == "sweep" and a.share == 0.0 and a.seed == 0)
    add("quality", "quality", (f"synth-{max(profile.pool_sizes)}", run_key(reference, profile)[0]),
        stage_cost("quality", profile.synthetic), profile.synthetic * results["quality"]["per_synthetic_volume_s"])
    return graph


def schedule(graph: list[tuple[Stage, float]], slots: int, slowdown: float = 1.0, plan_order: bool = False) -> float:
    """The wall time of ``graph`` built as the study's driver builds it: whenever a slot is free, the first ready stage
    (its inputs finished) in :func:`volgan.study.stages.critical_first` order (or, with ``plan_order``, in the plan's
    order) starts; ``slots`` stages at a time, each taking ``slowdown`` × its own time (stages sharing a GPU slow each
    other down).

    Returns
    -------
    float
        seconds from the first stage to the last.
    """
    import heapq

    seconds = {stage.key: t for stage, t in graph}
    stages = [stage for stage, _ in graph]
    pending = stages if plan_order else critical_first(stages)
    finished: set[str] = set()
    running: list[tuple[float, str]] = []
    now = 0.0
    while pending or running:
        for stage in [s for s in pending if all(d in finished for d in s.deps)][:slots - len(running)]:
            heapq.heappush(running, (now + seconds[stage.key] * slowdown, stage.key))
            pending = [s for s in pending if s is not stage]
        now, key = heapq.heappop(running)
        finished.add(key)
    return now


def critical_path(graph: list[tuple[Stage, float]]) -> float:
    """The longest chain of stages through ``graph`` in seconds: no number of GPUs builds the study faster."""
    longest: dict[str, float] = {}
    for stage, seconds in graph:
        longest[stage.key] = seconds + max((longest[d] for d in stage.deps), default=0.0)
    return max(longest.values())


def scale_out_lines(results: dict, profile: StudyProfile) -> list[str]:
    """The paper profile's projected wall time on 1, 2, 4 and 8 GPUs (one stage per GPU), and on one GPU shared by
    2 and 4 stages, against the 1-hour target on 8 GPUs."""
    graph = stage_graph(results, profile, profile.loader_workers)
    data = (profile.real_pool + profile.test) * results["phantoms"]["per_volume_s"]
    path = critical_path(graph)
    lines = ["", "On several GPUs (`volgan study --executor local` on one node, or `--executor ray` across nodes): "
             "the stages after the data stage scheduled as the study's driver schedules them (whenever a GPU is "
             "free, the ready stage with the most expected work on its path to the end: GANs and the classical "
             "runs first), at the rates above, plus the data stage first "
             f"({data / 3600:.2f} h). Critical path (no number of GPUs goes below it): {(data + path) / 3600:.2f} h.",
             "", "| GPUs | stages at a time | projected wall time | against 1 h on 8 GPUs |", "|---|---|---|---|"]
    for gpus in (1, 2, 4, 8):
        hours = (data + schedule(graph, gpus)) / 3600
        in_plan_order = (data + schedule(graph, gpus, plan_order=True)) / 3600
        verdict = ("**meets**" if hours <= 1.0 else f"**NOT met** ({hours:.2f}×)") if gpus == 8 else ""
        lines.append(f"| {gpus} | {gpus} | {hours:.2f} h ({in_plan_order:.2f} h in plan order) | {verdict} |")
    for share in (2, 4):
        ideal = (data + schedule(graph, share)) / 3600
        lines.append(f"| 1, shared by {share} stages (`--gpu-share {1 / share:g}`) | {share} | {ideal:.2f} h if they "
                     f"do not slow each other, {(data + schedule(graph, share, slowdown=share)) / 3600:.2f} h if each "
                     f"gets only its share of the GPU | |")
    lines += ["", "How much a GPU gains from running 2 or 4 stages at once is unmeasured (no GPU was at hand): the "
              "shared rows give its two bounds. The spine_segcls runs used 2.7 GiB of the H100's 80 GiB at 6.5 ms a "
              "presentation, which suggests room to share; only a measurement can say how much."]
    return lines


def project_command(args: argparse.Namespace) -> None:
    results = json.loads(Path(args.results).read_text(encoding="utf-8"))
    measured = StudyProfile.from_dict(results["profile"])
    profile = replace(PROFILES[args.profile], size=measured.size, spacing=measured.spacing)
    counts, sample = stage_counts(profile), results["sample"]
    lines = [f"Measured on {results['machine']} ({results['started']}): each piece at the {measured.name} "
             f"profile's {measured.size}³ at {measured.spacing} mm, widths {measured.channels}, batch "
             f"{measured.batch_size}, GAN base {measured.gan_base} at batch {measured.gan_batch_size}.", "",
             "| piece | sample | rate | GPU peak | finite |", "|---|---|---|---|---|",
             f"| phantoms ({results['phantoms']['workers']} processes) | {results['phantoms']['volumes']} | "
             f"{results['phantoms']['per_volume_s']:.3f} s/volume | | |"]
    if "gan" in results:
        gan = results["gan"]
        lines += [f"| spine_cgan, {len(gan['epochs'])} epochs | {sample['cases']} volumes | "
                  f"{1000 * gan['per_presentation_s']:.1f} ms/presentation | {gan['gpu_peak_gib']} GiB | "
                  f"{gan['finite']} |",
                  f"| synthesis | {results['synth']['volumes']} | {results['synth']['per_volume_s']:.3f} s/volume "
                  f"| | |"]
    for key in [k for k in results if k.startswith("segcls_")]:
        r = results[key]
        augment, precision, workers = key.split("_")[1:]
        lines.append(f"| spine_segcls, {augment}, {precision}, loader {workers.removeprefix('w')} workers, "
                     f"{len(r['epochs'])} epochs | {sample['cases']} volumes | {1000 * r['per_presentation_s']:.2f} "
                     f"ms/presentation, +{r['overhead_per_volume_s']:.3f} s/volume per run | {r['gpu_peak_gib']} GiB "
                     f"| {r['finite']} |")
    for key, name in (("eval_clean", "evaluation, clean"),
                      ("eval_robust_gradcam_cold", "evaluation, 4 conditions + Grad-CAM, artifacts computed"),
                      ("eval_robust_gradcam", "evaluation, 4 conditions + Grad-CAM, artifacts cached"),
                      ("eval_robust", "evaluation, 4 conditions, artifacts cached")):
        if key in results:
            lines.append(f"| {name} | {results[key]['volumes']} | {results[key]['per_volume_s']:.3f} s/test volume "
                         f"| | |")
    if "quality" in results:
        lines.append(f"| quality | {results['quality']['synthetic']} | "
                     f"{results['quality']['per_synthetic_volume_s']:.3f} s/synthetic volume | | |")
    runs = counts["runs"]
    lines += ["", f"The {profile.name} profile ({profile.seeds} seeds, {profile.presentations:,} presentations per "
              f"spine_segcls run, {profile.gan_presentations:,} per GAN, loader {profile.loader_workers} workers) "
              f"runs {counts['phantoms']} phantoms, {counts['gans']} GANs ({counts['gan_presentations']:,} "
              f"presentations), {counts['synthetic']} synthetic volumes, {len(runs)} spine_segcls runs "
              f"({sum(r['presentations'] for r in runs):,} presentations, "
              f"{sum(r['augment'] == 'classical' for r in runs)} of them with the classical preset) and as many "
              f"evaluations on {counts['test']} test volumes ({sum(r['robust'] for r in runs)} of them at four "
              f"conditions, with Grad-CAM's share where the claim needs it).", ""]
    variants = sorted({profile.loader_workers, 0})
    variants = [w for w in variants if f"segcls_classical_fp32_w{w}" in results]
    projected = [project(results, replace(profile, loader_workers=w), w) for w in variants]
    lines += ["| stage kind | " + " | ".join(f"classical preset's loader {w} workers"
                                             + (" (the profile's)" if w == profile.loader_workers else "")
                                             for w in variants) + " |",
              "|---" * (len(variants) + 1) + "|"]
    for kind in projected[0]:
        lines.append(f"| {kind} | " + " | ".join(f"{h[kind] / 3600:.2f} h" for h in projected) + " |")
    totals = [sum(h.values()) / 3600 for h in projected]
    lines.append("| **total** | " + " | ".join(
        f"**{t:.2f} h** ({'meets' if t <= TARGET_HOURS else 'NOT met:'} {TARGET_HOURS:.0f} h"
        f"{'' if t <= TARGET_HOURS else f', {t / TARGET_HOURS:.2f}×'})" for t in totals) + " |")
    lines += scale_out_lines(results, replace(profile, loader_workers=variants[-1]))
    body = "\n".join(lines + (["", args.note] if args.note else []))
    print(body)
    if args.write:
        options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sample.items() if k not in ("json", "size",
                                                                                                  "spacing"))
        write_section(SECTION, body, f"python scripts/bench_paper_profile.py measure --json RESULTS {options} && "
                                     f"python scripts/bench_paper_profile.py project RESULTS --profile {args.profile}",
                      measured_on=results["machine"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    run = sub.add_parser("measure", help="measure each kind of stage on a sample")
    run.add_argument("--json", required=True, help="where the results go (rewritten after every step)")
    run.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    run.add_argument("--size", type=int, default=0, help="another volume size (a smoke test on a CPU)")
    run.add_argument("--spacing", type=float, default=0.0)
    run.add_argument("--cases", type=int, default=64, help="training volumes of the sample")
    run.add_argument("--test", type=int, default=32, help="test volumes of the sample")
    run.add_argument("--gan-epochs", type=int, default=3)
    run.add_argument("--segcls-presentations", type=int, default=2048)
    run.add_argument("--classical-presentations", type=int, default=512)
    run.add_argument("--workers", type=int, default=min(8, max(0, (os.cpu_count() or 1) - 2)),
                     help="loader processes of the spine_segcls runs beside those with none (0: only those)")
    run.add_argument("--steps", default="gan,bf16,classical,quality",
                     help="what to measure beside phantoms, spine_segcls without augmentation and evaluation")
    run.set_defaults(func=measure)
    proj = sub.add_parser("project", help="project the full study from measured rates")
    proj.add_argument("results")
    proj.add_argument("--profile", default="paper", choices=sorted(PROFILES))
    proj.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    proj.add_argument("--note", default="", help="a paragraph to add below the tables")
    proj.set_defaults(func=project_command)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
