"""LunaSeg's napari side: turns ``src_train`` results into layers and widgets."""

__version__ = "0.1.0"

#: The plugin's name in napari (``name`` in napari.yaml): how widgets and the reader are named.
PLUGIN = "napari-lunaseg"
