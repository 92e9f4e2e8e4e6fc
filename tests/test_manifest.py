"""One napari manifest: ``napari.yaml`` at the top level, which the package ships through the
link ``napari_lunaseg/napari.yaml`` (pyproject's entry point and package data name that path)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_package_manifest_is_the_top_level_file() -> None:
    shipped = REPO / "napari_lunaseg" / "napari.yaml"
    assert shipped.is_symlink() and shipped.resolve() == (REPO / "napari.yaml").resolve()
    assert "napari_lunaseg:napari.yaml" in (REPO / "pyproject.toml").read_text()


def test_npe2_reads_the_manifest_with_its_widgets() -> None:
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(REPO / "napari_lunaseg" / "napari.yaml")
    assert manifest.name == "napari-lunaseg"
    commands = {c.id for c in manifest.contributions.commands or []}
    for contribution in [
        *(manifest.contributions.readers or []),
        *(manifest.contributions.writers or []),
        *(manifest.contributions.widgets or []),
        *(manifest.contributions.sample_data or []),
    ]:
        assert contribution.command in commands  # every contribution names a declared command
    assert {w.display_name for w in manifest.contributions.widgets or []} >= {
        "Mask QA",
        "Inference",
        "Training",
    }
