"""The ``volgan`` command line. Bad input ends with one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
import time

from volgan.errors import NonFiniteTraining, StageLost, VolganInputError
from volgan.labels import tumor_type_from_name


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit status 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def _triple(kind: type, name: str):
    def parse(text: str):
        parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
        try:
            values = [kind(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number or three numbers, got {text!r}") from None
        if len(values) == 1:
            values *= 3
        if len(values) != 3:
            raise argparse.ArgumentTypeError(f"{name} must be a number or three numbers, got {text!r}")
        return tuple(values)

    return parse


def _seed(text: str) -> int:
    """A seed: a whole number from 0 to 2³²−1 (numpy's generators refuse negatives)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed must be a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"a seed must be from 0 to {2**32 - 1}, got {value}")
    return value


def _types(values: list[str]) -> tuple[int, ...]:
    names = [v for text in values for v in text.split(",") if v.strip()]
    try:
        types = tuple(sorted({tumor_type_from_name(n) for n in names}))
    except ValueError as exc:
        raise VolganInputError(None, f"--types: {exc}") from None
    if 0 in types:
        raise VolganInputError(None, "--types names tumor classes (1–3); use --tumor-fraction for tumor-free cases")
    return types


def add_phantom_parser(sub) -> None:
    """Add ``volgan phantom`` and its options to the command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        the sub-command registry of :func:`build_parser`.
    """
    p = sub.add_parser("phantom", help="write a labeled spinal MRI phantom dataset",
                       description="Write labeled 3D spinal MRI phantoms (.nii.gz image and label) and a datalist.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--cases", type=int, required=True, help="number of cases")
    p.add_argument("--size", type=_triple(int, "--size"), default=(64, 64, 64), help="voxels: N or NX,NY,NZ (64)")
    p.add_argument("--spacing", type=_triple(float, "--spacing"), default=(1.5, 1.5, 1.5),
                   help="mm: S or SX,SY,SZ along the RAS axes (1.5)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--tumor-fraction", type=float, default=0.75, help="share of cases with a tumor (0.75)")
    p.add_argument("--types", nargs="+", default=["1,2,3"],
                   help="tumor classes to draw: names or numbers (intramedullary intradural_extramedullary vertebral)")
    p.add_argument("--contrast", choices=["t1", "t2", "random"], default="t2",
                   help="t1 or t2 tissue values, or random: each case's tissue intensities, blur, bias field, noise "
                        "and slice thickness drawn from ranges covering T1w, T2w, T2*w and MT-weighted spinal MRI "
                        "(domain randomisation, as SynthSeg), for a segmenter that does not depend on the contrast")
    p.add_argument("--clutter", action="store_true",
                   help="soft-tissue clutter outside the spine (vessels, fat islands, fibre texture; labeled "
                        "background), as real scans have")
    p.add_argument("--orientation", default="RAS", help="axis code of the stored arrays (RAS, LPS, PIR, …) or random")
    p.add_argument("--anatomy-field", type=float, default=None, metavar="MM",
                   help="draw the anatomy for a cubic field of MM mm and show its centre (96: natural size whatever "
                        "the grid); default: the anatomy is scaled to the grid's own field")
    p.add_argument("--format", choices=["msd", "nnunet"], default="msd")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of cases in the balanced test split")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes")
    p.add_argument("--start-index", type=int, default=0, help="first case index (to extend a dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    p.set_defaults(run=run_phantom)


def run_phantom(args) -> int:
    """Run ``volgan phantom``: a phantom data set, then its summary.

    Parameters
    ----------
    args : argparse.Namespace
        the parsed options.

    Returns
    -------
    int
        0 (bad input raises, and :func:`main` turns it into one line and status 2).
    """
    from volgan.data.phantom import PhantomConfig, make_dataset
    from volgan.data.summary import format_summary

    try:
        config = PhantomConfig(size=args.size, spacing=args.spacing, contrast=args.contrast,
                               tumor_fraction=args.tumor_fraction, types=_types(args.types),
                               orientation=args.orientation, anatomy_field_mm=args.anatomy_field,
                               clutter=args.clutter)
    except ValueError as exc:
        raise VolganInputError(None, str(exc)) from None
    start = time.perf_counter()
    datalist, cases, stats = make_dataset(args.out, args.cases, config, seed=args.seed, fmt=args.format,
                                          test_fraction=args.test_fraction, workers=args.workers,
                                          overwrite=args.overwrite, start=args.start_index,
                                          progress=sys.stderr.isatty())
    elapsed = time.perf_counter() - start
    print(format_summary(cases, stats, f"volgan phantom: {len(cases)} cases ({args.contrast}, seed {args.seed}) "
                                       f"in {elapsed:.1f} s → {datalist}"))
    return 0


def add_check_parser(sub) -> None:
    """Add ``volgan check`` and its options to the command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        the sub-command registry of :func:`build_parser`.
    """
    p = sub.add_parser("check", help="validate a datalist and every volume it names, and summarise it")
    p.add_argument("datalist", help="dataset.json (MSD or nnU-Net) or the folder holding it")
    p.set_defaults(run=run_check)


def run_check(args) -> int:
    """Run ``volgan check``: the datalist's checks and summary.

    Parameters
    ----------
    args : argparse.Namespace
        the parsed options.

    Returns
    -------
    int
        0 (bad input raises, and :func:`main` turns it into one line and status 2).
    """
    from volgan.data.datalist import check_cases, read_datalist
    from volgan.data.summary import format_summary, readiness
    from volgan.study.data import split_user_data
    from volgan.study.profiles import PROFILES

    datalist = read_datalist(args.datalist)
    stats = check_cases(datalist.cases, datalist.path)
    print(format_summary(datalist.cases, stats, f"volgan check: {datalist.path} ({datalist.format}) is valid, "
                                                f"{len(datalist.cases)} cases"))
    print("\n".join(readiness(datalist.cases)))
    try:
        split_user_data(datalist, PROFILES["quick"])
        print("  volgan study --real: yes")
    except VolganInputError as exc:
        print(f"  volgan study --real: no: {exc.what}")
    return 0


def add_import_parser(sub) -> None:
    """Add ``volgan import`` and its options to the command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        the sub-command registry of :func:`build_parser`.
    """
    p = sub.add_parser("import", help="import a spine data set (SPIDER, VerSe, TotalSpineSeg, nnU-Net, MSD, pairs)",
                       description="Read a data set as published (NIfTI, .mha, .mhd, .nrrd, DICOM series at any depth) "
                                   "and write it as NIfTI with volgan's labels and a datalist. Nothing is written "
                                   "until every case has been read and mapped.")
    p.add_argument("src", help="an MSD or nnU-Net dataset.json (or its folder), a folder with images/ and masks/ "
                               "(SPIDER), or a folder of NAME.ext and NAME_label.ext (_seg, _mask) pairs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--label-map", help="spider, verse, totalspineseg, or a JSON file {their value: volgan label}; "
                                       "default: the label values already are volgan's (0-5)")
    p.add_argument("--unmapped", choices=["refuse", "background"], default="refuse",
                   help="label values the map lacks: refuse the import (default) or make them background")
    p.add_argument("--classes", help="CSV with columns name,tumor_type (a number or a class name; empty: unknown); "
                                     "default: the source datalist's tumor_type, else unknown")
    p.add_argument("--format", choices=["msd", "nnunet"], default="msd")
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="share of labeled cases put in a class-balanced test split, when the source has none (0)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of that split")
    p.add_argument("--suffix", help="BIDS: the contrast to import (T2w, T1w, T2star, MTS…); default: the tree's "
                                    "only one")
    p.add_argument("--mask", action="append", metavar="NAME[=LABEL]",
                   help="BIDS or pairs: derivative masks to take (seg-manual, label-SC_seg → cord; label-CSF_seg → "
                        "csf; label-lesion, lesion-manual → tumor; another name with =LABEL); repeatable; default: "
                        "every mask of those names, merged (a lesion wins where it overlaps; other overlaps are "
                        "refused)")
    p.add_argument("--classes-column", help="BIDS: the participants.tsv column holding tumor_type")
    p.add_argument("--allow-mask-like-images", action="store_true",
                   help="import images that look like label maps (few whole values, on another image's grid); by "
                        "default they are refused")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    p.set_defaults(run=run_import)


def run_import(args) -> int:
    """Run ``volgan import``: the imported data set, then its summary.

    Parameters
    ----------
    args : argparse.Namespace
        the parsed options.

    Returns
    -------
    int
        0 (bad input raises, and :func:`main` turns it into one line and status 2).
    """
    from volgan.data.importer import import_dataset
    from volgan.data.masks import parse_mask_choices
    from volgan.data.summary import format_summary, readiness

    start = time.perf_counter()
    result = import_dataset(args.src, args.out, label_map=args.label_map, fmt=args.format, unmapped=args.unmapped,
                            classes=args.classes, test_fraction=args.test_fraction, seed=args.seed,
                            overwrite=args.overwrite, progress=sys.stderr.isatty(),
                            allow_mask_like=args.allow_mask_like_images, suffix=args.suffix,
                            masks=parse_mask_choices(args.mask), classes_column=args.classes_column)
    print(format_summary(result.cases, result.stats, f"volgan import: {len(result.cases)} cases from {args.src} "
                                                     f"({result.kind}) in {time.perf_counter() - start:.1f} s → "
                                                     f"{result.datalist}"))
    if result.series:
        print(f"  DICOM series read ({len(result.series)}, one case each):")
        print("\n".join(f"    {name} ← {folder} ({files} files)" for name, (folder, files) in result.series.items()))
    print("\n".join(readiness(result.cases)))
    return 0


def add_infer_parser(sub) -> None:
    """Add ``volgan infer`` and its options to the command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        the sub-command registry of :func:`build_parser`.
    """
    p = sub.add_parser("infer", help="segment and classify volumes (NIfTI, .mha, .nrrd, DICOM series)",
                       description="Label maps in each input's own geometry, and a table of tumor probabilities.")
    p.add_argument("--model", required=True, help="checkpoint file (model.pt), its TorchScript export (model.ts, "
                   "from monai.bundle ckpt_export; no --gradcam) or bundle folder")
    p.add_argument("--input", required=True, nargs="+",
                   help="volume files (.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr), folders of them, or folders holding "
                        "DICOM series at any depth (one output per series)")
    p.add_argument("--output-ext", choices=[".nii.gz", ".nii", ".mha", ".nrrd"], default=None,
                   help="format of the outputs (default: the input's own; .nii.gz for DICOM)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--gradcam", action="store_true", help="also write a Grad-CAM heat map of the tumor class")
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap (0.25)")
    p.add_argument("--sw-batch-size", type=int, default=4, help="sliding windows per forward pass (4)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="network arithmetic; bf16 autocast is faster and differs in a few boundary voxels")
    p.add_argument("--overwrite", action="store_true", help="replace predictions already in --out")
    p.set_defaults(run=run_infer)


def run_infer(args) -> int:
    """Run ``volgan infer``: label maps and the tumor table.

    Parameters
    ----------
    args : argparse.Namespace
        the parsed options.

    Returns
    -------
    int
        0; 2 when any input failed (its error is in the table; the others are written).
    """
    from volgan.segcls.inference import InferenceInterrupted, run_inference
    from volgan.segcls.predict import load_model

    model = load_model(args.model, args.device)
    try:
        rows = run_inference(model, args.input, args.out, gradcam=args.gradcam, overlap=args.overlap,
                             sw_batch_size=args.sw_batch_size, overwrite=args.overwrite,
                             progress=sys.stderr.isatty(), precision=args.precision, output_ext=args.output_ext)
    except InferenceInterrupted as exc:
        print(f"volgan infer: interrupted; {exc.written} volume(s) finished in this run are kept in {args.out} and "
              f"listed in predictions.csv, {exc.remaining} not done; run the same command to finish them",
              file=sys.stderr)
        return 130
    failed = [r for r in rows if r["error"]]
    for row in rows:
        if row["error"]:
            print(f"FAILED  {row['error']}")
        else:
            print(f"{row['output']}  tumor {row['tumor_probability']:.3f}  type {row['predicted_tumor_type']}")
    print(f"volgan infer: {len(rows) - len(failed)} of {len(rows)} volumes written; table {args.out}/predictions.csv")
    if failed:
        names = ", ".join(os.path.basename(r["input"]) for r in failed[:5]) + (" …" if len(failed) > 5 else "")
        print(f"volgan infer: error: {len(failed)} input(s) failed ({names}); their errors are in "
              f"{args.out}/predictions.csv", file=sys.stderr)
        return 2
    return 0


def add_evaluate_parser(sub) -> None:
    """Add ``volgan evaluate`` and its options to the command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        the sub-command registry of :func:`build_parser`.
    """
    p = sub.add_parser("evaluate", help="segmentation and classification report with confidence intervals")
    p.add_argument("--pred", required=True, help="folder of predicted label maps (NAME_seg.nii.gz or NAME.nii.gz; "
                                                 ".mha, .nrrd too)")
    p.add_argument("--ref", required=True, help="reference datalist (its test split) or folder of label maps")
    p.add_argument("--classes", help="predictions.csv or .json of volgan infer, for the classification figures")
    p.add_argument("--images", help="folder of images for the overlays (when --ref is a folder)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance in mm (2.0)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument("--seed", type=_seed, default=0, help="bootstrap seed")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    """Run ``volgan evaluate``: the evaluation report.

    Parameters
    ----------
    args : argparse.Namespace
        the parsed options.

    Returns
    -------
    int
        0 (bad input raises, and :func:`main` turns it into one line and status 2).
    """
    import math

    from volgan.data.files import check_writable_dir
    from volgan.evaluation.report import evaluate, summary_line

    if args.bootstrap < 1:
        raise VolganInputError(None, f"--bootstrap must be at least 1, got {args.bootstrap}")
    if not (math.isfinite(args.nsd_tolerance) and args.nsd_tolerance >= 0):
        raise VolganInputError(None, f"--nsd-tolerance must be a finite number of mm, 0 or more, got "
                                     f"{args.nsd_tolerance}")
    check_writable_dir(args.out)
    summary = evaluate(args.pred, args.ref, args.out, classes=args.classes, images=args.images,
                       tolerance_mm=args.nsd_tolerance, resamples=args.bootstrap, seed=args.seed,
                       overwrite=args.overwrite, progress=sys.stderr.isatty())
    print(f"volgan evaluate: {summary_line(summary)}; report {args.out}/report.html")
    return 0


def add_synth_parser(sub) -> None:
    """Add ``volgan synth`` and its options to the command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        the sub-command registry of :func:`build_parser`.
    """
    p = sub.add_parser("synth", help="synthesize labeled volumes with a trained spine_cgan",
                       description="Write synthetic .nii.gz image/label pairs and a datalist (source: synthetic).")
    p.add_argument("--checkpoint", required=True, help="generator.pt or a spine_cgan bundle folder")
    p.add_argument("--out", required=True, help="output folder")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--cases", type=int, help="number of labeled volumes to draw from noise")
    group.add_argument("--labels", help="folder of label maps to paint images for")
    p.add_argument("--types", help="exact class shares, e.g. none=0.5,intramedullary=0.2,vertebral=0.3 "
                                   "(default: equal)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-pose", action="store_true",
                   help="keep generated label maps in the generator's pose (default: a random rigid pose each, "
                        "adding the pose spread the training maps have beyond the generator's)")
    p.add_argument("--label-source", choices=["gan", "real-deformed"], default="gan",
                   help="where --cases label maps come from: the GAN's label generator (default), or real training "
                        "maps of --pool, deformed and given a new tumor of the asked class")
    p.add_argument("--pool", help="with --label-source real-deformed: the datalist of the GAN's real training pool "
                                  "(its training cases only are used)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=run_synth)


def run_synth(args) -> int:
    """Run ``volgan synth``: synthetic cases and their datalist.

    Parameters
    ----------
    args : argparse.Namespace
        the parsed options.

    Returns
    -------
    int
        0 (bad input raises, and :func:`main` turns it into one line and status 2).
    """
    from collections import Counter

    from volgan.data.files import check_writable_dir
    from volgan.gan.synth import load_synthesizer, synthesize
    from volgan.labels import TUMOR_TYPES

    if args.types and args.labels:
        raise VolganInputError(None, "--types goes with --cases, not --labels")
    if args.cases is not None and args.cases < 1:
        raise VolganInputError(None, f"--cases must be at least 1, got {args.cases}")
    check_writable_dir(args.out)
    synth = load_synthesizer(args.checkpoint, args.device)
    cases = synthesize(synth, args.out, n_cases=args.cases, types=args.types, labels=args.labels, seed=args.seed,
                       overwrite=args.overwrite, progress=sys.stderr.isatty(), pose=not args.no_pose,
                       label_source=args.label_source, pool=args.pool)
    counts = Counter(TUMOR_TYPES.get(c.tumor_type, "unknown") for c in cases)
    print(f"volgan synth: {len(cases)} synthetic cases → {args.out}/dataset.json ("
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")")
    return 0


def add_quality_parser(sub) -> None:
    """Add ``volgan quality`` and its options to the command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        the sub-command registry of :func:`build_parser`.
    """
    p = sub.add_parser("quality", help="synthetic-quality report: Fréchet distance, diversity, memorization")
    p.add_argument("--real", required=True, help="real datalist (training split = the GAN's training pool)")
    p.add_argument("--synthetic", required=True, help="synthetic datalist")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--model", help="spine_segcls checkpoint or bundle, for label consistency")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(run=run_quality)


def run_quality(args) -> int:
    """Run ``volgan quality``: the synthetic-quality report.

    Parameters
    ----------
    args : argparse.Namespace
        the parsed options.

    Returns
    -------
    int
        0 (bad input raises, and :func:`main` turns it into one line and status 2).
    """
    from volgan.data.files import check_writable_dir
    from volgan.evaluation.quality import quality_report, summary_line

    check_writable_dir(args.out)
    report = quality_report(args.real, args.synthetic, args.out, model=args.model, seed=args.seed,
                            overwrite=args.overwrite)
    print(f"volgan quality: {summary_line(report)}; report {args.out}/quality.md")
    return 0


def add_study_parser(sub) -> None:
    """Add ``volgan study`` and its options to the command line.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        the sub-command registry of :func:`build_parser`.
    """
    p = sub.add_parser("study", help="the ratio sweep and augmentation comparison, end to end, resumable",
                       description="Phantom data (or --real) → balanced real test set → GAN on the real training "
                                   "pool → synthetic pool → segmenter-classifiers on 11 real:synthetic mixes and "
                                   "none/classical/GAN/both augmentation → evaluation clean and with artifacts → "
                                   "study.json, study.csv, report.md, report.html. Run again to resume.")
    p.add_argument("--profile", choices=["quick", "standard", "paper", "tiny"], default="quick",
                   help="quick: 32³, under 30 min on 2 CPU cores; standard: the quick design with twice the training, "
                        "twice the test set and three seeds, about 1.5 h on 2 CPU cores; paper: the sizes of arXiv "
                        "2506.17165, for a GPU; tiny: a smoke test")
    p.add_argument("--out", default="study", help="study folder (created; an existing study there is resumed)")
    p.add_argument("--seeds", type=int, help="training seeds per configuration (profile default: quick 2, paper 5)")
    p.add_argument("--real", help="your datalist instead of phantoms (labeled real cases with tumor_type; data without "
                                  "tumor classes is refused: train and evaluate spine_segcls on it instead)")
    p.add_argument("--label-source", choices=["gan", "real-deformed"], default=None,
                   help="synthetic label maps from the GAN's label generator or from its real training maps, deformed "
                        "and given new tumors (profile default)")
    p.add_argument("--size", type=_triple(int, "--size"), help="the field in voxels: N (a cube, a power of two ≥ 16) "
                   "or NX,NY,NZ along R, A, S, e.g. 16,64,64 for sagittal thick slices (profile default: quick 32)")
    p.add_argument("--spacing", type=_triple(float, "--spacing"),
                   help="field voxel size in mm: S or SX,SY,SZ along R, A, S (profile default: quick 1.5); with --real "
                        "each case is resampled to this field centred on its labeled spine")
    p.add_argument("--jobs", type=int, help="stages built at a time on a machine without a GPU (default: 2 on two or "
                                            "more cores, each on its share of them); with GPUs: one per GPU")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: worker processes on this machine, one per GPU; ray: Ray Core tasks on a Ray cluster "
                        '(pip install "volgan[ray]"), each stage asking for a GPU or CPU cores')
    p.add_argument("--address", help="with --executor ray: the cluster to join (auto: the one this machine belongs to; "
                                     "default: a local one started for the study)")
    p.add_argument("--gpu-share", type=float, default=1.0,
                   help="the fraction of a GPU each stage asks for: 0.5 runs two stages on each GPU (default 1)")
    p.add_argument("--real-check", metavar="DIR|DATALIST",
                   help="your real scans (a datalist, or a folder volgan import reads: pairs, BIDS) on which every "
                        "trained model is also checked, beside the real scans shipped in data/real")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run_study_command)


def run_study_command(args) -> int:
    """Run ``volgan study``: every stage still missing, then the report.

    Parameters
    ----------
    args : argparse.Namespace
        the parsed options.

    Returns
    -------
    int
        0; 130 when interrupted (finished stages are kept, and the same command resumes).
    """
    from volgan.study.run import run_study

    try:
        report = run_study(args.out, args.profile, seeds=args.seeds, real=args.real, quiet=args.quiet,
                           label_source=args.label_source, size=args.size, spacing=args.spacing, jobs=args.jobs,
                           real_check=args.real_check, executor=args.executor, address=args.address,
                           gpu_share=args.gpu_share)
    except KeyboardInterrupt:
        print(f"volgan study: interrupted; finished stages are kept in {args.out}; run the same command to resume",
              file=sys.stderr)
        return 130
    print(f"volgan study: report {report} (also report.md, study.json, study.csv in {args.out})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``volgan`` command line: every sub-command and its options.

    Returns
    -------
    argparse.ArgumentParser
        the parser.
    """
    parser = _Parser(prog="volgan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"volgan {__import__('volgan').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_phantom_parser, add_import_parser, add_check_parser, add_infer_parser, add_evaluate_parser,
                add_synth_parser,
                add_quality_parser, add_study_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``volgan`` command: bad input ends in one line on stderr naming the file and exit status 2, a training
    whose values stop being finite in status 1, Ctrl-C in 130.

    Parameters
    ----------
    argv : list[str] | None
        the arguments (None: ``sys.argv[1:]``).

    Returns
    -------
    int
        the exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # the output piped into a reader that stopped (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit would fail too
        return 0
    except VolganInputError as exc:
        print(f"volgan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteTraining as exc:
        print(f"volgan {args.command}: error: {exc.message}", file=sys.stderr)
        return 1
    except StageLost as exc:
        print(f"volgan {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"volgan {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
