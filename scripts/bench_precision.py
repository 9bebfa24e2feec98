"""Training arithmetic on this CPU: one training step of the segmenter in float32 and under bfloat16 autocast, and
what training's ``amp auto`` picks here (:func:`volgan.training.bf16_autocast`).

    python scripts/bench_precision.py [--threads 1,2] [--steps 10] [--write]

A step: SegClsNet at its default widths on 2 patches of 32³ (the study's quick patch), forward, a mean loss over
both heads, backward and Adam, with :func:`volgan.training.fp32_small_convs` in force under bf16 as training has it.
The two arithmetics alternate, twice each, at each thread count; the figure is the median step after 2 warm-up
steps, the lower of the two repeats. bf16 is the reference's rival, fp32 the reference: the ratio is bf16 ÷ fp32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from benchmarks import write_section

from volgan.segcls.network import SegClsNet
from volgan.training import bf16_autocast, fp32_small_convs, native_bf16_cpu, onednn_bf16

PATCH = (2, 1, 32, 32, 32)  # batch, channel, voxels


def step_seconds(bf16: bool, steps: int) -> float:
    """Median seconds of one training step (after 2 warm-up steps) in the arithmetic asked for."""
    torch.manual_seed(0)
    network = SegClsNet()
    if bf16:
        fp32_small_convs(network)
    optimizer = torch.optim.Adam(network.parameters(), 1e-3)
    x = torch.randn(PATCH)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            seg, cls = network(x)
        loss = seg.float().mean() + cls.float().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    lines = [f"oneDNN runs bfloat16: {onednn_bf16()}; AVX512-BF16: {torch.cpu._is_avx512_bf16_supported()}; AMX: "
             f"{torch.cpu._is_amx_tile_supported()}; native bfloat16 (volgan.training.native_bf16_cpu): "
             f"{native_bf16_cpu()}; training's `amp auto` here: {'bf16' if bf16_autocast('auto', 'cpu') else 'fp32'}.",
             "", "| torch threads | fp32 step (s) | bf16 autocast step (s) | bf16 ÷ fp32 |", "|---|---|---|---|"]
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        fp32, bf16 = [], []
        for _ in range(2):
            fp32.append(step_seconds(False, args.steps))
            bf16.append(step_seconds(True, args.steps))
        lines.append(f"| {threads} | {min(fp32):.3f} | {min(bf16):.3f} | {min(bf16) / min(fp32):.2f} |")
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_section(f"Training arithmetic: {'native' if native_bf16_cpu() else 'no native'} bfloat16",
                      "One segmenter training step (2 patches of 32³, default widths, forward, backward, Adam) in "
                      "each arithmetic.\n\n" + body, "python scripts/bench_precision.py --write")


if __name__ == "__main__":
    main()
