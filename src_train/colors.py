"""The colour code used everywhere (viewer, TensorBoard, README figures).

True positive green, false negative orange, false positive red, over a grey CT. Error volumes
use the label values below.
"""

from __future__ import annotations

#: Label values of an error volume (prediction vs. ground truth).
ERROR_BACKGROUND = 0
ERROR_TP = 1
ERROR_FN = 2
ERROR_FP = 3

#: RGB colours, 0-255.
TP_RGB = (0, 200, 0)
FN_RGB = (255, 150, 0)
FP_RGB = (230, 20, 20)

ERROR_COLORS_RGB: dict[int, tuple[int, int, int]] = {
    ERROR_TP: TP_RGB,
    ERROR_FN: FN_RGB,
    ERROR_FP: FP_RGB,
}
ERROR_NAMES: dict[int, str] = {ERROR_TP: "TP", ERROR_FN: "FN", ERROR_FP: "FP"}

#: Lung window for display, HU (low, high).
LUNG_WINDOW_HU = (-1350, 150)
