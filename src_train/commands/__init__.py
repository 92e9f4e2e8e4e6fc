"""Whole jobs over folders, above the libraries and below the CLI: masks for a data folder
(:mod:`.mask_folder`), the mask report (:mod:`.mask_report`), inference over a folder
(:mod:`.infer_folder`) and the evaluation of a run (:mod:`.eval_run`).

A command strings stages together (read, infer, score, write); the stages never import it.
"""
