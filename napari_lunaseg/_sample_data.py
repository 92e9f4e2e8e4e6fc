"""Sample data contribution: a synthetic chest CT generated on the fly from a seed."""

from __future__ import annotations

from napari_lunaseg._layers import LayerDataTuple
from napari_lunaseg._scan import ScanBundle, bundle_layers
from napari_lunaseg._screen import watch_opening_viewer
from src_train.luna import TRUE_NODULE_KINDS
from src_train.synth import SynthConfig, generate_scan, synthetic_series_uid

#: Seed of the sample scan offered in File > Open Sample.
#: Not a seed the shipped demo detector was trained on (its training folder is seed 7), so the
#: Inference widget shows the demo on a scan it never saw.
SAMPLE_SEED = 2026
#: One nodule of each kind the generator makes (the core's list), in its order.
SAMPLE_NODULES = len(TRUE_NODULE_KINDS)


def synthetic_bundle(seed: int = SAMPLE_SEED, config: SynthConfig | None = None) -> ScanBundle:
    """Generate one synthetic chest CT with its annotations and true nodule shapes (by default
    :data:`SAMPLE_NODULES`: one of each kind)."""
    cfg = config or SynthConfig(nodules_per_scan_range=(SAMPLE_NODULES, SAMPLE_NODULES))
    scan = generate_scan(synthetic_series_uid(seed, 0), seed, cfg, kind_offset=0)
    return ScanBundle(
        ct=scan.ct,
        nodules=scan.annotations,
        truth=scan.truth,
        true_nodules=list(scan.nodules),
    )


def make_synthetic_ct() -> list[LayerDataTuple]:
    """File > Open Sample: synthetic CT, true shapes, generated mask and nodule points."""
    watch_opening_viewer()
    return bundle_layers(synthetic_bundle(SAMPLE_SEED))
