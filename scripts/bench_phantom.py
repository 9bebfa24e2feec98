"""Phantom speed: 100 cases of 64³ written as .nii.gz with their datalist. Target: under 60 s here.

    python scripts/bench_phantom.py [--cases 100] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import write_section

from volgan.data.phantom import PhantomConfig, generate_case, make_dataset

TARGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    walls = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            make_dataset(Path(tmp) / "data", args.cases, PhantomConfig(), seed=repeat, workers=args.workers)
            walls.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(20):
        generate_case(0, i)
    per_case_ms = (time.perf_counter() - start) / 20 * 1000

    best, median = min(walls), statistics.median(walls)
    verdict = "met" if median < TARGET_S else "NOT met"
    body = (f"| what | figure |\n|---|---|\n"
            f"| {args.cases} cases of 64³ (1.5 mm, T2) written with datalist, {args.workers} workers, median of "
            f"{args.repeats} | {median:.1f} s (best {best:.1f} s) |\n"
            f"| generation alone, one process, per case | {per_case_ms:.0f} ms |\n"
            f"| target: under {TARGET_S:.0f} s | {verdict} ({median / TARGET_S:.2f}× the budget) |\n")
    print(body)
    write_section("Phantom generation", body, f"python scripts/bench_phantom.py --cases {args.cases} "
                                               f"--workers {args.workers} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
