"""LunaSeg headless core: CT loading, LUNA16 data, ground-truth masks, training and inference.

This package never imports Qt or napari (``tests/test_import_boundary.py`` enforces it).
"""

__version__ = "0.1.0"

#: Folder of the synthetic default data set: commands given no data folder use it.
DEFAULT_DATA_DIR = "lunaseg-data"
