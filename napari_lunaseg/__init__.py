"""LunaSeg's napari side: turns ``src_train`` results into layers and widgets."""

__version__ = "0.1.0"
