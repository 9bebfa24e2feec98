"""Classical augmentation against a training step (issue 5: a torchio transform that is the bottleneck of a
training step is made fast, not dropped).

    python scripts/bench_augment.py [--size 64] [--repeats 20]

Times, on the same volumes in the same run: every transform of the ``classical`` preset (as torchio ships it
and, for the two volgan replaces, volgan's version with identical output), the whole preset both ways, and
one spine_segcls training step per volume (forward, backward, AdamW; default widths, batch 2) on this CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torchio as tio
from benchmarks import write_section

from volgan.segcls.network import SegClsNet
from volgan.segcls.train import SegClsLoss
from volgan.transforms import RandomBiasField, RandomElasticDeformation, augmentation


def per_call_ms(transform, subject, repeats: int, mean: bool = False) -> float:
    """Median (or mean) ms per call over ``repeats`` calls seeded 0, 1, … (both versions draw alike)."""
    times = []
    for i in range(repeats):
        torch.manual_seed(i)
        start = time.perf_counter()
        transform(subject)
        times.append(time.perf_counter() - start)
    return 1000 * (statistics.mean(times) if mean else statistics.median(times))


def step_ms(size: int, repeats: int) -> float:
    net, loss = SegClsNet(), SegClsLoss()
    optimizer = torch.optim.AdamW(net.parameters())
    x = torch.randn(2, 1, size, size, size)
    y, t = torch.randint(0, 6, (2, 1, size, size, size)), torch.randint(0, 4, (2,))
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss(net(x), (y, t)).backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(rng.normal(size=(1, n, n, n)).astype("f4"))),
                          label=tio.LabelMap(tensor=torch.from_numpy(rng.integers(0, 6, (1, n, n, n)))))
    pairs = [
        ("elastic deformation (5 control points, 4 mm)",
         tio.RandomElasticDeformation(num_control_points=5, max_displacement=4),
         RandomElasticDeformation(num_control_points=5, max_displacement=4)),
        ("bias field (order 3, ±0.4)", tio.RandomBiasField(coefficients=0.4), RandomBiasField(coefficients=0.4)),
    ]
    same = []
    rows = []
    for name, reference, ours in pairs:
        torch.manual_seed(1)
        a = reference(subject)
        torch.manual_seed(1)
        b = ours(subject)
        diff = float((a.image.data - b.image.data).abs().max())
        labels = float((a.label.data == b.label.data).float().mean())
        same.append(diff)
        ref_ms, our_ms = per_call_ms(reference, subject, args.repeats), per_call_ms(ours, subject, args.repeats)
        rows.append(f"| {name}, when applied | {ref_ms:.1f} ms | {our_ms:.1f} ms | {ref_ms / our_ms:.1f}× | "
                    f"max |Δ| {diff:.1e}, labels agreeing {100 * labels:.2f}% |")
    others = [("affine (±10%, ±10°)", tio.RandomAffine(scales=0.1, degrees=10)),
              ("anisotropy (1.5-3×)", tio.RandomAnisotropy(downsampling=(1.5, 3))),
              ("motion (2 transforms)", tio.RandomMotion(num_transforms=2)), ("ghosting", tio.RandomGhosting()),
              ("spike", tio.RandomSpike()), ("blur", tio.RandomBlur(std=(0, 1))),
              ("noise", tio.RandomNoise(std=(0, 0.1)))]
    for name, transform in others:
        rows.append(f"| {name}, when applied (torchio, kept) | {per_call_ms(transform, subject, args.repeats):.1f} ms "
                    f"| – | – | – |")
    preset = augmentation("classical")
    torchio_preset = tio.Compose([tio.RandomElasticDeformation(num_control_points=5, max_displacement=4, p=0.2)
                                  if isinstance(t, RandomElasticDeformation) else
                                  tio.RandomBiasField(coefficients=0.4, p=0.3) if isinstance(t, RandomBiasField)
                                  else t for t in preset.transforms])
    preset_ref = per_call_ms(torchio_preset, subject, 10 * args.repeats, mean=True)
    preset_ours = per_call_ms(preset, subject, 10 * args.repeats, mean=True)
    step = step_ms(n, max(3, args.repeats // 4))
    body = (f"Volumes of {n}³ (image and label map); medians of {args.repeats} calls; the whole preset: mean of "
            f"{10 * args.repeats} calls seeded alike for both versions, each transform drawn with its probability."
            "\n\n"
            "| transform | torchio | volgan | speed-up | same output |\n|---|---|---|---|---|\n" + "\n".join(rows)
            + f"\n\n| per training volume | time | share of a training step |\n|---|---|---|\n"
            f"| classical preset, torchio's transforms | {preset_ref:.1f} ms | {100 * preset_ref / step:.0f}% |\n"
            f"| classical preset, volgan (elastic and bias field replaced) | {preset_ours:.1f} ms | "
            f"{100 * preset_ours / step:.0f}% |\n"
            f"| spine_segcls training step per volume (default widths, batch 2, this CPU) | {step:.1f} ms | – |\n\n"
            "On a GPU the step takes a few ms per volume while augmentation stays on the CPU loader, so the preset "
            "is what bounds a step there; run the loader with workers (`num_workers`) as well.\n")
    print(body)
    write_section("Classical augmentation against a training step", body,
                  f"python scripts/bench_augment.py --size {n} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
