"""spine_cgan's checkpoints: every ``save_interval`` epochs the trainer, both GANs, their EMA copies and the
training statistics go to ``models/checkpoint_epoch=N.pt`` (written whole or not at all, never with a
non-finite weight), the EMA generators to ``models/generator.pt``; a run resumes from the latest.
"""

from __future__ import annotations

import torch

from volgan.gan.trainer import CGanTrainer

GENERATOR_FILE = "generator.pt"


def attach_checkpointing(trainer: CGanTrainer, ckpt_dir: str, config: dict, stats: dict,
                         save_interval: int = 1) -> CGanTrainer:
    """Save every network, optimiser and the trainer's state each ``save_interval`` epochs to
    ``ckpt_dir/checkpoint_checkpoint_epoch=N.pt`` (:class:`volgan.training.CheckpointSaver`: a kill during the save
    leaves the previous one whole; older ones go once the new one is in place), resume from the newest such
    checkpoint when one exists, and export the EMA generators with ``config`` and ``stats`` to
    ``ckpt_dir/generator.pt`` at each save. In a distributed run every process resumes and the first one alone
    writes (ignite's ``DiskSaver`` saves on rank 0 only, and so does the export).

    Parameters
    ----------
    trainer : CGanTrainer
        the trainer (a MONAI engine) to attach to.
    ckpt_dir : str
        the checkpoint folder.
    config : dict
        the generators' configuration (size, widths, z sizes…), exported with them.
    stats : dict
        the training data's statistics (:func:`volgan.gan.trainer.training_stats`), exported with them.
    save_interval : int
        epochs between saves.

    Returns
    -------
    CGanTrainer
        ``trainer``, with the handlers attached.
    """
    from pathlib import Path

    from ignite.engine import Events
    from monai.handlers import CheckpointLoader

    from volgan.data.files import atomic_path
    from volgan.errors import NonFiniteTraining
    from volgan.training import CheckpointSaver, all_finite

    save_dict = {"label_generator": trainer.label_generator, "image_generator": trainer.image_generator,
                 **({"label_encoder": trainer.label_encoder} if trainer.label_encoder is not None else {}),
                 "label_discriminator": trainer.label_discriminator,
                 "image_discriminator": trainer.image_discriminator, "label_ema": trainer.label_ema.shadow,
                 "image_ema": trainer.image_ema.shadow, "g_optimizer": trainer.g_optimizer,
                 "d_optimizer": trainer.d_optimizer, "trainer": trainer}
    trainer.ckpt_dir = ckpt_dir
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None:
        CheckpointLoader(load_path=str(latest), load_dict=save_dict, map_location=trainer.state.device).attach(trainer)
    CheckpointSaver(save_dir=ckpt_dir, save_dict=save_dict, save_interval=save_interval, n_saved=1,
                    file_prefix="checkpoint", epoch_level=True).attach(trainer)

    def export(engine) -> None:
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return
        for _, older in checkpoints(ckpt_dir)[:-1]:  # left by the run before a resume
            older.unlink(missing_ok=True)
        state = {"config": config, "stats": stats, "epoch": engine.state.epoch,
                 "label_generator": trainer.label_ema.shadow.state_dict(),
                 "image_generator": trainer.image_ema.shadow.state_dict()}
        if not all_finite(state):
            raise NonFiniteTraining(f"{Path(ckpt_dir) / GENERATOR_FILE}: not written, the generators' weights are "
                                    f"not finite at epoch {engine.state.epoch}")
        with atomic_path(Path(ckpt_dir) / GENERATOR_FILE, suffix=".pt") as tmp:
            torch.save(state, tmp)

    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=save_interval), export)
    return trainer


def checkpoints(ckpt_dir: str) -> list:
    """``(epoch, path)`` of each ``checkpoint_*.pt`` in ``ckpt_dir``, oldest first.

    Parameters
    ----------
    ckpt_dir : str
        the checkpoint folder.

    Returns
    -------
    list[tuple[int, Path]]
        (epoch, path) pairs, by epoch.
    """
    import re
    from pathlib import Path

    found = []
    for path in Path(ckpt_dir).glob("checkpoint_*.pt"):
        match = re.search(r"(\d+)\.pt$", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str):
    """The newest ``checkpoint_*.pt`` in ``ckpt_dir`` by epoch, or None.

    Parameters
    ----------
    ckpt_dir : str
        the checkpoint folder.

    Returns
    -------
    Path | None
        the newest checkpoint's path.
    """
    found = checkpoints(ckpt_dir)
    return found[-1][1] if found else None
