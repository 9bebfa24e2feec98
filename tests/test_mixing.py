"""Mixing real and synthetic volumes: exact counts per training set, per epoch and within one volume per batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from volgan.data.datalist import read_datalist
from volgan.data.mixing import RatioBatchSampler, mix_cases, mixed_loader
from volgan.transforms import Preprocessing


def pools(phantom_dir):
    cases = read_datalist(phantom_dir).cases
    real = cases[:6]
    synthetic = [dataclasses.replace(c, source="synthetic", name=f"s_{c.name}") for c in cases[6:]]
    return real, synthetic


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_fixed_size_mix_is_exact(phantom_dir, share):
    real, synthetic = pools(phantom_dir)
    mix = mix_cases(real, synthetic, synthetic_share=share, size=6, seed=1)
    assert len(mix) == 6 and sum(c.source == "synthetic" for c in mix) == round(6 * share)
    assert mix == mix_cases(real, synthetic, synthetic_share=share, size=6, seed=1)


def test_additive_mix_and_pool_limits(phantom_dir):
    real, synthetic = pools(phantom_dir)
    mix = mix_cases(real, synthetic, extra=4)
    assert sum(c.source == "real" for c in mix) == 6 and sum(c.source == "synthetic" for c in mix) == 4
    with pytest.raises(ValueError, match="pools hold"):
        mix_cases(real, synthetic, extra=7)


@pytest.mark.parametrize("n_real, n_synth, batch", [(10, 3, 4), (7, 7, 2), (9, 0, 4), (0, 5, 2), (13, 4, 5)])
def test_every_batch_keeps_the_ratio_within_one_volume(n_real, n_synth, batch):
    sources = ["real"] * n_real + ["synthetic"] * n_synth
    sampler = RatioBatchSampler(sources, batch, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        drawn = [i for b in batches for i in b]
        assert sorted(drawn) == list(range(len(sources)))  # every volume exactly once per epoch
        share = n_synth / len(sources)
        for b in batches:
            synthetic = sum(sources[i] == "synthetic" for i in b)
            assert abs(synthetic - len(b) * share) <= 1


def test_loader_draws_the_counted_volumes_over_an_epoch(phantom_dir):
    real, synthetic = pools(phantom_dir)
    mix = mix_cases(real, synthetic, synthetic_share=0.5, size=6, seed=0)
    loader = mixed_loader(mix, batch_size=2, prep=Preprocessing(patch=(32, 32, 32)))
    counts = {"real": 0, "synthetic": 0}
    for batch in loader:
        sources = list(batch["source"])
        assert sources.count("synthetic") == 1  # 2 × 0.5 per batch, exactly
        for s in sources:
            counts[s] += 1
        assert batch["image"]["data"].shape[1:] == (1, 32, 32, 32)
    assert counts == {"real": 3, "synthetic": 3}
    assert np.isfinite(batch["image"]["data"].numpy()).all()


def test_the_bundles_own_loader_trains_on_every_case_with_the_ratio_in_every_batch(tmp_path, phantom_dir):
    """spine_segcls as the study runs it (val_fraction 0): its train loader draws exactly the datalist's
    training cases each epoch, every batch at the real:synthetic ratio, in a new order each epoch."""
    import json

    from monai.bundle import ConfigWorkflow

    from volgan.data.datalist import write_datalist

    real, synthetic = pools(phantom_dir)
    mix = [dataclasses.replace(c, split="training") for c in mix_cases(real, synthetic, synthetic_share=0.5,
                                                                        size=6, seed=0)]
    write_datalist(mix, tmp_path / "data")
    root = Path(__file__).resolve().parent.parent / "bundles" / "spine_segcls"
    workflow = ConfigWorkflow(config_file=str(root / "configs" / "train.json"), workflow_type="train",
                              meta_file=str(root / "configs" / "metadata.json"), bundle_root=str(tmp_path),
                              dataset_dir=str(tmp_path / "data"), patch=[32, 32, 32], batch_size=2,
                              val_fraction=0.0, progress=False)
    workflow.initialize()
    loader = workflow.parser.get_parsed_content("train#dataloader")
    orders = []
    for _epoch in range(2):
        names = []
        for batch in loader:
            assert list(batch["source"]).count("synthetic") == 1, list(batch["source"])
            names += list(batch["name"])
        assert sorted(names) == sorted(c.name for c in mix)
        orders.append(names)
    assert orders[0] != orders[1]
    assert json.loads(json.dumps([c.name for c in workflow.parser.get_parsed_content("split")[0]])) \
        == [c.name for c in mix]
