"""``volgan phantom``, ``volgan check`` and ``volgan import``: the data in."""

from __future__ import annotations

import os
import sys
import time

from volgan.cli.arguments import seed_number, triple, tumor_types
from volgan.errors import VolganInputError


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
    p.add_argument("--size", type=triple(int, "--size"), default=(64, 64, 64), help="voxels: N or NX,NY,NZ (64)")
    p.add_argument("--spacing", type=triple(float, "--spacing"), default=(1.5, 1.5, 1.5),
                   help="mm: S or SX,SY,SZ along the RAS axes (1.5)")
    p.add_argument("--seed", type=seed_number, default=0)
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
    p.add_argument("--region", choices=["auto", "lumbar", "cervical"], default="auto",
                   help="the spine drawn: lumbar (a large vertebral body, the field centred between canal and body) "
                        "or cervical (a small body, the field centred on the canal, as cord MRI is framed); auto "
                        "(default): cervical for --contrast random, lumbar otherwise")
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
                               tumor_fraction=args.tumor_fraction, types=tumor_types(args.types),
                               orientation=args.orientation, anatomy_field_mm=args.anatomy_field,
                               clutter=args.clutter, region=args.region)
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
    p.add_argument("--seed", type=seed_number, default=0, help="seed of that split")
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
