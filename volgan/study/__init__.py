"""Stage 5, the study: profiles (:mod:`~volgan.study.profiles`), data (:mod:`~volgan.study.data`), the plan
(:mod:`~volgan.study.plan`), stages (:mod:`~volgan.study.stages`), what they build (:mod:`~volgan.study.build`),
running it (:mod:`~volgan.study.run`) and its report (:mod:`~volgan.study.report`).

Sub-modules are imported where used, not here, so importing one stage does not import the others.
"""
