"""spine_cgan's inference as MONAI workflow pieces (the cases to draw are
:func:`volgan.gan.synth.synthesis_cases`): a transform that draws each label map,
one that brings the painted image to the training intensities, and a handler that writes the volumes and
their datalist. ``bundles/spine_cgan/configs/inference.json`` puts them around MONAI's ``SupervisedEvaluator``,
``SimpleInferer`` and ``CheckpointLoader``, with the image generator as its ``network_def``; what it writes
is what :func:`volgan.gan.synth.synthesize` writes for the same checkpoint, cases and seed.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.engines import Workflow
from monai.transforms import MapTransform

from volgan.data.datalist import Case, write_datalist
from volgan.data.files import staged_output_dir
from volgan.gan.label_sources import DEFAULT_PLACEMENT, draw_case_label, label_pool
from volgan.gan.synth import SYNTH_ENTRIES, synthesis_meta, write_case
from volgan.gan.synthesizer import Synthesizer, paint_inputs, training_intensity


class DrawLabelMapd(MapTransform):
    """Draw each case's label map and the image generator's noise.

    Adds ``image``: the one-hot map (6, S, S, S) float32, ``label``: the map (1, S, S, S) uint8 (both
    MetaTensors on the generators' RAS grid, named after the case), ``z``: the global noise (z_dim,) and
    ``texture``: the per-voxel noise (1, S, S, S). Case ``index`` depends only on (``seed``, ``index``) and its
    class. With a ``pool`` (a datalist of the GAN's real training cases) the map is a real one, deformed
    (:func:`volgan.gan.label_sources.deformed_real_label`); otherwise the label generator draws it
    (:func:`volgan.gan.label_sources.draw_label_map`). What was drawn goes with the case as JSON text, ``drawn``, so
    that it reaches the writer from loader worker processes too.
    """

    def __init__(self, synthesizer: Synthesizer, seed: int = 0, pose: bool = True,
                 pool: str | os.PathLike | None = None, placement: str = DEFAULT_PLACEMENT):
        super().__init__(keys=["tumor_type"])
        self.synthesizer, self.seed, self.pose, self.placement = synthesizer, seed, pose, placement
        self.pool = label_pool(synthesizer, pool) if pool is not None else None

    def __call__(self, data: dict) -> dict:
        item = dict(data)
        label, info, noise = draw_case_label(self.synthesizer, int(item["tumor_type"]), self.seed, int(item["index"]),
                                             self.pose, self.pool, self.placement)
        item["drawn"] = json.dumps(info)
        onehot, z, texture = paint_inputs(self.synthesizer, label, noise)
        meta = {"affine": torch.as_tensor(self.synthesizer.affine), "filename_or_obj": item["name"]}
        item["image"] = MetaTensor(onehot[0], meta=dict(meta))
        item["label"] = MetaTensor(torch.from_numpy(label[None].astype(np.uint8)), meta=dict(meta))
        item["z"], item["texture"] = z[0], texture[0]
        return item


class TrainingIntensityd(MapTransform):
    """The image generator's z-normalised output (1, S, S, S) under ``keys`` in the training data's intensity
    units (float32, ≥ 0; ``stats`` of the checkpoint: ``intensity_mean`` and ``intensity_std``)."""

    def __init__(self, keys: str | list[str], stats: dict):
        super().__init__(keys)
        self.stats = stats

    def __call__(self, data: dict) -> dict:
        item = dict(data)
        for key in self.key_iterator(item):
            item[key] = torch.from_numpy(training_intensity(self.stats, item[key].detach().float().cpu().numpy()))
        return item


class SynthesisWriter:
    """Ignite handler that writes each painted case (``pred``) and its map (``label``) as
    ``imagesTr/NAME.nii.gz`` and ``labelsTr/NAME.nii.gz`` in the training orientation, then the MSD datalist.

    Everything is built in a staging folder and moved into ``output_dir`` when the run completes
    (:func:`volgan.data.files.staged_output_dir`): a run that fails leaves ``output_dir`` as it was.

    Parameters
    ----------
    output_dir
        where the datalist and its folders go.
    synthesizer
        the checkpoint's generators and statistics (grid, orientation).
    draw
        the transform that drew the maps (its seed, pose switch and pool).
    overwrite
        replace a datalist already in ``output_dir``.
    """

    def __init__(self, output_dir: str | os.PathLike, synthesizer: Synthesizer, draw: DrawLabelMapd,
                 overwrite: bool = True):
        self.output_dir, self.synthesizer, self.draw, self.overwrite = Path(output_dir), synthesizer, draw, overwrite
        self.cases: list[Case] = []
        self.drawn: dict[str, dict] = {}
        self._stack: ExitStack | None = None
        self.staging: Path | None = None

    def attach(self, engine: Workflow) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_iteration)
        engine.add_event_handler(Events.COMPLETED, self.finish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.abandon)

    def start(self, engine: Workflow) -> None:
        self._stack, self.cases, self.drawn = ExitStack(), [], {}
        self.staging = self._stack.enter_context(staged_output_dir(self.output_dir, SYNTH_ENTRIES, self.overwrite))

    def write_iteration(self, engine: Workflow) -> None:
        code = self.synthesizer.stats.get("orientation", "RAS")
        for case, output in zip(engine.state.batch, engine.state.output, strict=True):  # decollated
            image = output["pred"][0].numpy()
            if not np.isfinite(image).all():
                raise FloatingPointError(f"{case['name']}: the generator painted NaN or Inf; nothing was written")
            label = output["label"][0].cpu().numpy().astype(np.uint8)
            image_path, label_path = write_case(self.staging, case["name"], image, label, self.synthesizer.affine,
                                                code)
            self.cases.append(Case(case["name"], image_path, label_path, int(case["tumor_type"]), "synthetic",
                                   "training"))
            self.drawn[case["name"]] = json.loads(case["drawn"])

    def finish(self, engine: Workflow) -> None:
        synth, draw = self.synthesizer, self.draw
        label_source = "gan" if draw.pool is None else "real-deformed"
        infos = [self.drawn[c.name] for c in self.cases]
        write_datalist(self.cases, self.staging, "msd",
                       synthesis_meta(synth, draw.seed, draw.pose and draw.pool is None, label_source, self.cases,
                                      infos))
        self._stack.close()
        engine.logger.info(f"spine_cgan: {len(self.cases)} labeled volumes and their datalist in {self.output_dir}")

    def abandon(self, engine: Workflow, error: Exception) -> None:
        if self._stack is not None:
            self._stack.__exit__(type(error), error, error.__traceback__)
            self._stack = None
        raise error
