"""Stage 1, data: reading and writing volumes (:mod:`~volgan.data.io`), datalists (:mod:`~volgan.data.datalist`),
phantoms (:mod:`~volgan.data.phantom`), importing a user's data (:mod:`~volgan.data.importer`), summaries
(:mod:`~volgan.data.summary`), torchio loaders (:mod:`~volgan.data.loader`) and exact real:synthetic mixes
(:mod:`~volgan.data.mixing`).

Sub-modules are imported where used, not here, so importing one stage does not import the others.
"""
