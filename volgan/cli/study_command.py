"""``volgan study``: the ratio sweep and the augmentation comparison in one command."""

from __future__ import annotations

import sys

from volgan.cli.arguments import triple


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
    p.add_argument("--size", type=triple(int, "--size"), help="the field in voxels: N (a cube, a power of two ≥ 16) "
                   "or NX,NY,NZ along R, A, S, e.g. 16,64,64 for sagittal thick slices (profile default: quick 32)")
    p.add_argument("--spacing", type=triple(float, "--spacing"),
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
