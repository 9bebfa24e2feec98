"""``volgan infer``, ``volgan evaluate``, ``volgan synth`` and ``volgan quality``: the models' commands."""

from __future__ import annotations

import os
import sys

from volgan.cli.arguments import seed_number
from volgan.errors import VolganInputError


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
    p.add_argument("--seed", type=seed_number, default=0, help="bootstrap seed")
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
    p.add_argument("--seed", type=seed_number, default=0)
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
    p.add_argument("--seed", type=seed_number, default=0)
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
