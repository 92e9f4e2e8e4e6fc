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

#: The second palette: everything drawn that is not a TP/FN/FP voxel. None of these is green,
#: orange or red, so those three keep one meaning on every screen. RGB, 0-255.
MASK_RGB = (40, 165, 255)  # blue: the mask grown from the annotated points
TRUE_SHAPE_RGB = (180, 120, 255)  # violet outline: the true nodule shapes (synthetic data)
ANNOTATION_RGB = (255, 235, 0)  # yellow: annotated nodule points and their boxes
PREDICTION_RGB = (0, 215, 255)  # cyan: the model's mask and its candidate rings
GROWTH_BOX_RGB = (255, 60, 230)  # magenta: the box of a growth replay step
PROBE_DENSE_RGB = (0, 215, 255)  # cyan: a growth probe that found dense tissue (grow on)
PROBE_STOP_RGB = (255, 235, 0)  # yellow: a growth probe that stopped the growth
REVIEWED_RGB = (245, 245, 245)  # white outline: the reviewed ground truth
REVIEW_EDIT_RGB = (255, 60, 230)  # magenta: voxels being corrected in review
CURRENT_BOX_RGB = (0, 215, 255)  # cyan: the box of the nodule under review

#: Window for a 3-D maximum intensity projection (bone and contrast), HU (low, high).
MIP_WINDOW_HU = (100, 800)
