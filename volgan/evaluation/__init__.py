"""Stage 4, evaluation: metrics (:mod:`~volgan.evaluation.metrics`), the evaluation report
(:mod:`~volgan.evaluation.report`), pages and figures (:mod:`~volgan.evaluation.rendering`) and the quality of a
synthetic pool (:mod:`~volgan.evaluation.quality`).

Sub-modules are imported where used, not here, so importing one stage does not import the others.
"""
