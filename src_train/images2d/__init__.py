"""2-D image sets (dermoscopy such as PH2): data, synthetic images, training, comparison.

RGB images with binary lesion masks meet the same models (:mod:`src_train.model`), losses
(:mod:`src_train.losses`) and device augmentation (:mod:`src_train.augment`) as CT. Modules,
one concept each:

- :mod:`.imageio`  read one image or mask (any mode -> RGB / bool), resize
- :mod:`.folder`   find and pair images and masks (PH2 layout, name suffixes, mask folders)
- :mod:`.dataset`  load a paired set into arrays, the seeded train/val/test split
- :mod:`.synth`    synthetic dermoscopy-like images with true masks (``lunaseg synth2d``)
- :mod:`.metrics`  per-image IoU, IoU score, Dice, precision, recall; TP/FN/FP overlay
- :mod:`.trainer`  a small training loop (train_step / validate / on_epoch_end)
- :mod:`.compare`  model x loss comparison runner (``lunaseg compare``), resumable
- :mod:`.conclusion`, :mod:`.plots`, :mod:`.report`  results.csv, PNGs, report.md
"""
