"""Engine pieces both bundles train with: word switches (``flag``), bfloat16 autocast where the CPU has it
natively (small-input convolutions kept in float32), the stop on a non-finite loss or gradient, the progress
bar that draws only on a terminal, and atomic, finite-only checkpoint saving.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator

import torch
import torchio as tio
from ignite.handlers import DiskSaver
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver as MonaiCheckpointSaver
from monai.handlers import LrScheduleHandler, ValidationHandler
from monai.inferers import SimpleInferer
from monai.utils import CommonKeys as Keys
from torch import nn

from volgan.errors import NonFiniteTraining


def prepare_batch(batch: dict, device=None, non_blocking: bool = False, **kwargs):
    """torchio batch → ``(image, (label, tumor_type))`` on ``device``: (B,1,X,Y,Z) float, (B,1,X,Y,Z) long, (B,).

    Parameters
    ----------
    batch : dict
        a torchio batch (``image``, ``label``, ``tumor_type``).
    device : torch.device | str | None
        where the tensors go.
    non_blocking : bool
        copy asynchronously where the device allows it.
    **kwargs : dict
        ignored (MONAI's engines pass more).

    Returns
    -------
    tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
        image (B, 1, X, Y, Z) float, and (label map (B, 1, X, Y, Z) int64, tumor_type (B,) int64, −1 where unknown).
        A partially annotated case's unknown voxels are marked as :func:`mark_unknown` says.
    """
    image = batch["image"][tio.DATA].to(device=device, non_blocking=non_blocking)
    label = batch["label"][tio.DATA].to(device=device, dtype=torch.long, non_blocking=non_blocking)
    tumor_type = torch.as_tensor(batch["tumor_type"]).to(device=device, dtype=torch.long)
    if "unknown_bits" in batch:
        label = mark_unknown(label, torch.as_tensor(batch["unknown_bits"]).to(device=device, dtype=torch.long))
    return image, (label, tumor_type)


def mark_unknown(label: torch.Tensor, unknown_bits: torch.Tensor) -> torch.Tensor:
    """Label maps of partially annotated cases with their 0 voxels marked unknown: ``PARTIAL_BASE + bits``, the bits
    (bit k for label k) naming what such a voxel may be (:func:`volgan.data.loader.unknown_bits`).

    Parameters
    ----------
    label : torch.Tensor
        (B, 1, X, Y, Z) label maps, values 0–5.
    unknown_bits : torch.Tensor
        (B,) each case's bit mask; 0 for a fully annotated case (its maps are returned unchanged).

    Returns
    -------
    torch.Tensor
        (B, 1, X, Y, Z) label maps.
    """
    if not bool((unknown_bits != 0).any()):
        return label
    from volgan.labels import PARTIAL_BASE

    bits = unknown_bits.view(-1, *([1] * (label.dim() - 1)))
    return torch.where((label == 0) & (bits != 0), PARTIAL_BASE + bits, label)


def loss_value(output: dict | list[dict]) -> float:
    """Engine output (a batch dict, or the per-sample dicts of a decollating engine) → the batch loss.

    Parameters
    ----------
    output : dict | list[dict]
        the engine's output of one iteration.

    Returns
    -------
    float
        the loss.
    """
    first = output[0] if isinstance(output, list) else output
    return float(first[Keys.LOSS])


def flag(value: bool | int | str) -> bool:
    """A bundle switch as a bool: the command line gives ``--amp true`` as the string ``"true"``, which plain
    ``bool`` would take as True whatever it says. Accepts true/false, yes/no, on/off, 1/0 in any case.

    Parameters
    ----------
    value : bool | int | str
        a bool, 0/1, or a word.

    Returns
    -------
    bool
        the switch.

    Raises
    ------
    ValueError
        for a word that is not a switch.
    """
    if not isinstance(value, str):
        return bool(value)
    word = value.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def onednn_bf16() -> bool:
    """Whether oneDNN runs bfloat16 on this CPU: natively, or emulated on an AVX512 CPU without AVX512-BF16 or AMX.

    Returns
    -------
    bool
        oneDNN's answer; False where torch cannot ask it.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX512-BF16 or AMX, as torch reads the CPU, and oneDNN's
    bfloat16 kernels available. oneDNN also reports bfloat16 support on an AVX512 CPU without either, where it
    emulates it: one training step of the segmenter took 2.9× as long in bfloat16 as in float32 there
    (``scripts/bench_precision.py``, BENCHMARKS.md "Training arithmetic").

    Returns
    -------
    bool
        True on a CPU with AVX512-BF16 or AMX whose oneDNN runs bfloat16.
    """
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except (AttributeError, RuntimeError):
        return False
    return bool(native) and onednn_bf16()


def bf16_autocast(value: bool | str, device: torch.device | str) -> bool:
    """Whether to train in bfloat16 autocast. ``"auto"`` picks it only on a device class where volgan's networks
    have been shown to train in it: a CPU that computes bfloat16 natively (:func:`native_bf16_cpu`: AVX512-BF16 or
    AMX; both oneDNN kernel paths are tested, with :func:`fp32_small_convs` in force). An AVX512 CPU without them,
    where oneDNN emulates bfloat16 at a third of float32's speed, and CUDA, not yet shown, get fp32; ``true`` asks
    for bfloat16 anywhere. Otherwise :func:`flag` of ``value``.

    Parameters
    ----------
    value : bool | str
        ``True``/``False`` (or their words), or ``"auto"``.
    device : torch.device | str
        the device the network trains on.

    Returns
    -------
    bool
        whether to use bfloat16 autocast.
    """
    if not (isinstance(value, str) and value.strip().lower() == "auto"):
        return flag(value)
    device = torch.device(device)
    return device.type == "cpu" and native_bf16_cpu()


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type``, on every torch from 2.2 (``torch.is_autocast_enabled`` takes a
    device type from torch 2.4; before, the CPU has ``torch.is_autocast_cpu_enabled``).

    Parameters
    ----------
    device_type : str
        ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    bool
        True inside an enabled ``torch.autocast`` of that device type.
    """
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class SmallInputFp32Conv3d(nn.Conv3d):
    """A :class:`~torch.nn.Conv3d` that leaves autocast and computes in float32 when its input is smaller than its
    kernel along any spatial axis (an S/8 map of 2³ under a 3³ kernel, say), and is a plain Conv3d otherwise.

    oneDNN's bfloat16 weight-gradient kernel on AVX512 CPUs without AMX reads memory it never wrote for such
    inputs: the gradient comes back NaN whenever that memory held NaN (58 of 144 small-input shapes tried, none
    of 144 shapes at or above the kernel size). That made spine_cgan's weights NaN at 16³ on such CPUs.
    These layers are a few voxels across, so float32 costs nothing measurable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if autocast_enabled(device_type) and any(
                n < k for n, k in zip(x.shape[2:], self.kernel_size, strict=True)):
            with torch.autocast(device_type, enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class AutocastInferer(SimpleInferer):
    """MONAI's :class:`~monai.inferers.SimpleInferer` under bfloat16 autocast when ``enabled`` (on the input's
    device type, CPU included, which MONAI's own ``amp`` switch does not cover), with every output returned in
    float32 so that losses and metrics are computed in full precision. Outputs: the network's, same shapes."""

    def __init__(self, enabled: bool = False):
        super().__init__()
        self.enabled = bool(enabled)

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs):
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=self.enabled):
            outputs = network(inputs, *args, **kwargs)
        if isinstance(outputs, tuple | list):
            return type(outputs)(o.float() for o in outputs)
        return outputs.float()


def fp32_small_convs(network: nn.Module) -> nn.Module:
    """Make every plain :class:`~torch.nn.Conv3d` of ``network`` a :class:`SmallInputFp32Conv3d`, in place
    (same parameters, state-dict keys and hooks, spectral norm included). Returns ``network``.

    Parameters
    ----------
    network : nn.Module
        the network to change.

    Returns
    -------
    nn.Module
        ``network``.
    """
    for module in network.modules():
        if type(module) is nn.Conv3d:
            module.__class__ = SmallInputFp32Conv3d
    return network


def check_finite(bundle: str, engine, terms: dict[str, torch.Tensor], networks: dict[str, nn.Module] | None = None,
                 ckpt_dir: str | None = None) -> None:
    """Raise :class:`NonFiniteTraining` naming ``bundle``, the epoch and the first loss term of ``terms`` (name →
    scalar tensor) or the first network of ``networks`` (name → module, gradients checked) that is not finite.
    Call it before the optimiser step, so that no update with a non-finite value is ever taken.

    Parameters
    ----------
    bundle : str
        the bundle's name, for the message.
    engine : ignite.engine.Engine
        the engine (its epoch and iteration are named).
    terms : dict[str, torch.Tensor]
        the loss terms of this iteration.
    networks : dict[str, nn.Module] | None
        networks whose gradients are checked, or None.
    ckpt_dir : str | None
        the checkpoint folder, named as where the last finite checkpoint lies, or None.

    Raises
    ------
    NonFiniteTraining
        at the first term or gradient that is NaN or infinite.
    """
    bad = next((name for name, value in terms.items() if not bool(torch.isfinite(value).all())), None)
    if bad is None and networks:
        for name, network in networks.items():
            grads = [p.grad for p in network.parameters() if p.grad is not None]
            if grads and not bool(torch.isfinite(torch.stack([g.float().norm() for g in grads])).all()):
                bad = f"gradient of {name}"
                break
    if bad is None:
        return
    kept = ""
    if ckpt_dir:
        from pathlib import Path

        written = any(Path(ckpt_dir).glob("*.pt"))
        kept = f"; the last finite checkpoint is kept in {ckpt_dir}" if written else "; no checkpoint was written"
    message = (f"{bundle}: training stopped at epoch {engine.state.epoch}, iteration {engine.state.iteration}: "
               f"{bad} is not finite (NaN or Inf){kept}")
    engine.logger.error(message)
    raise NonFiniteTraining(message)


def all_finite(value) -> bool:
    """Whether every floating-point tensor in ``value`` (a tensor, module, state dict, or nested dicts, lists and
    objects with ``state_dict``) is finite.

    Parameters
    ----------
    value : object
        a tensor, a module, a state dict, or nested containers of them.

    Returns
    -------
    bool
        True when no floating-point value is NaN or infinite.
    """
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    if hasattr(value, "state_dict") and callable(value.state_dict):
        return all_finite(value.state_dict())
    return True


class StopOnNonFinite:
    """A MONAI-style handler for a :class:`~monai.engines.SupervisedTrainer`: after the backward pass and before
    the optimiser step, :func:`check_finite` of the loss and of ``network``'s gradients."""

    def __init__(self, bundle: str, network: nn.Module, ckpt_dir: str | None = None):
        self.bundle, self.network, self.ckpt_dir = bundle, network, ckpt_dir

    def attach(self, engine) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine) -> None:
        loss = engine.state.output[Keys.LOSS]
        check_finite(self.bundle, engine, {"loss": torch.as_tensor(loss)}, {"network": self.network}, self.ckpt_dir)


def progress_of(items: list, desc: str, unit: str, enabled: bool | str = True) -> Iterator:
    """``items``, one by one, with their progress: a tqdm bar on a terminal; elsewhere (a log file, a bundle run)
    a line per item, ``DESC: 3/16 UNITs, 1.2 s``, through the ``volgan`` logger at INFO. Nothing when not
    ``enabled``.

    Parameters
    ----------
    items : list
        the items.
    desc : str
        what is being done (the line's start).
    unit : str
        what an item is called.
    enabled : bool | str
        show progress (a bool or its word).

    Yields
    ------
    object
        each item of ``items``.
    """
    if not flag(enabled):
        yield from items
        return
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, unit=unit)
        return
    logger, started = logging.getLogger("volgan"), time.perf_counter()
    for done, item in enumerate(items, start=1):
        yield item
        logger.info(f"{desc}: {done}/{len(items)} {unit}s, {time.perf_counter() - started:.1f} s")


class UnusedWriter:
    """Stands in for a TensorBoard ``SummaryWriter`` in a process that logs nothing (every process but the first
    of a torchrun run): given as a ``TensorBoardStatsHandler``'s ``summary_writer``, it keeps the handler from
    opening an event file that would stay empty. The handler is never attached there, so nothing is written."""


class ProgressBar:
    """A tqdm progress bar over each epoch's iterations showing the loss; a MONAI-style handler (``attach``).
    It draws only on a terminal: where stderr is a file or a pipe, its carriage-return redraws would fill the
    log, and the StatsHandler's lines are the progress there. With ``enabled=False`` it attaches nothing (the study
    draws its own bar per stage)."""

    def __init__(self, persist: bool = False, enabled: bool | str = True):
        self.persist, self.enabled = persist, flag(enabled)

    def attach(self, engine) -> None:
        if not (self.enabled and sys.stderr.isatty()):
            return
        ignite_progress_bar()(persist=self.persist).attach(engine,
                                                           output_transform=lambda out: {"loss": loss_value(out)})


def ignite_progress_bar() -> type:
    """ignite's tqdm ``ProgressBar`` class: ``ignite.handlers`` from ignite 0.5, ``ignite.contrib.handlers`` in
    0.4.11 (the version MONAI 1.4's ``ignite`` extra installs).

    Returns
    -------
    type
        The class.
    """
    try:
        from ignite.handlers import ProgressBar as IgniteProgressBar
    except ImportError:
        from ignite.contrib.handlers import ProgressBar as IgniteProgressBar
    return IgniteProgressBar


class ProgressLog:
    """A log line per ``every`` batches (``NAME: batch 3/16, 1.2 s``) and a summary when the run completes
    (``NAME: done, 16 batches in 19.0 s``), through the engine's logger: the progress of a bundle run that has no
    loss to show (inference, evaluation). A MONAI-style handler (``attach``)."""

    def __init__(self, name: str, every: int = 1):
        self.name, self.every = name, max(1, int(every))
        self.started = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self.line)
        engine.add_event_handler(Events.COMPLETED, self.summary)

    def start(self, engine) -> None:
        self.started = time.perf_counter()

    def line(self, engine) -> None:
        total = engine.state.epoch_length or "?"
        engine.logger.info(f"{self.name}: batch {engine.state.iteration}/{total}, "
                           f"{time.perf_counter() - self.started:.1f} s")

    def summary(self, engine) -> None:
        engine.logger.info(f"{self.name}: done, {engine.state.iteration} batches in "
                           f"{time.perf_counter() - self.started:.1f} s")


class ReplaceAfterSave(BaseSaveHandler):
    """Wrap an ignite :class:`~ignite.handlers.DiskSaver` so that each file is written atomically (a temporary
    file beside it, renamed onto its name) and a file ignite asks to remove goes only once the next save is in
    place; a saver with a fixed ``filename`` (MONAI's) has its file replaced, never removed."""

    def __init__(self, saver: DiskSaver):
        saver._atomic = True  # ignite's own temporary-file-and-rename path, which also keeps group/others read
        self.saver, self.pending = saver, []

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        if not all_finite(checkpoint):
            raise NonFiniteTraining(f"{self.saver.dirname}/{filename}: not written, its weights are not finite")
        self.saver(checkpoint, filename, metadata)
        for old in self.pending:
            if old != filename:
                self.saver.remove(old)
        self.pending = []

    def remove(self, filename: str) -> None:
        if getattr(self.saver, "filename", None) is None:
            self.pending.append(filename)


class CheckpointSaver(MonaiCheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` with its files saved through :class:`ReplaceAfterSave`:
    MONAI writes in place, and ignite removes the old file before writing the new one, so a run killed during a
    save lost its checkpoint (a corrupt file, or none); here the previous one stays whole until the new one is
    complete. A run that ends in an exception writes no "final" file (MONAI's saves one then): the network of
    a crashed run is not the final one. Same arguments."""

    def exception_raised(self, engine, e: BaseException) -> None:
        raise e

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = ReplaceAfterSave(checkpoint.save_handler)


# The handlers every process of a torchrun run attaches (the others, which save, log and draw, run in the first
# process alone); multi_gpu_train.json picks them by type, so reordering train.json's handlers changes nothing.
EVERY_RANK_HANDLERS = (ValidationHandler, LrScheduleHandler, StopOnNonFinite)
