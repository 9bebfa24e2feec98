"""Stage 3, the segmenter-classifier: its network (:mod:`~volgan.segcls.network`), training pieces
(:mod:`~volgan.segcls.train`), prediction of one volume (:mod:`~volgan.segcls.predict`), inference over files
(:mod:`~volgan.segcls.inference`) and Grad-CAM (:mod:`~volgan.segcls.gradcam`).

Sub-modules are imported where used, not here, so importing one stage does not import the others.
"""
