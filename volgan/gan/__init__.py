"""Stage 2, synthesis: the 3D conditional GAN's networks (:mod:`~volgan.gan.networks`), losses
(:mod:`~volgan.gan.losses`), trainer (:mod:`~volgan.gan.trainer`), checkpoints (:mod:`~volgan.gan.checkpoints`),
the pose of label maps (:mod:`~volgan.gan.pose`) and synthesis of labeled volumes (:mod:`~volgan.gan.synth`).

Sub-modules are imported where used, not here, so importing one stage does not import the others.
"""
