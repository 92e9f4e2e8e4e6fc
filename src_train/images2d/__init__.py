"""2-D image sets (dermoscopy such as PH2): data, synthetic images, training, comparison.

RGB images with binary lesion masks meet the same models (:mod:`src_train.model`), losses
(:mod:`src_train.losses`) and device augmentation (:mod:`src_train.augment`) as CT. Modules,
one concept each:

- :mod:`.imageio`  read one image or mask (any mode -> RGB / bool), resize
- :mod:`.folder`   find and pair images and masks (PH2 layout, name suffixes, mask folders)
- :mod:`.dataset`  load a paired set into arrays, the seeded train/val/test split
- :mod:`.synth`    synthetic dermoscopy-like images with true masks (``lunaseg synth2d``)
- :mod:`.metrics`  per-image IoU, IoU score, Dice, precision, recall; TP/FN/FP overlay
- :mod:`.predict`  the RGB input rule; probabilities over a stack, at the model's size
- :mod:`.trainer`  a small training loop (train_step / validate / on_epoch_end) on the CT
  run's pieces; what still differs from the CT Trainer is written in its docstring
- :mod:`.options`  ``CompareOptions`` (``lunaseg compare`` is generated from it), the runs
- :mod:`.compare`  model x loss comparison runner (``lunaseg compare``), resumable
- :mod:`.conclusion`, :mod:`.plots`, :mod:`.report`, :mod:`.results`  results.csv, PNGs,
  report.md
- :mod:`.ct_compare`, :mod:`.ct_report`  the same command on a LUNA16 folder, through the CT
  Trainer, ranked by validation Dice
"""
