"""Records every stage reads, below all of them: a run's data contract and its fingerprint
(:mod:`.contract`), the series split (:mod:`.split`), what results are scored against and on
which series (:mod:`.truth`), the candidate record (:mod:`.candidate`) and the detection
threshold (:mod:`.threshold`).

Nothing here trains, infers or scores; the stages import these modules, never the reverse.
"""
