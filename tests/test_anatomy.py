"""Where the body and lungs are: the lung field keeps the lungs and what lies inside them."""

from __future__ import annotations

from models import chest

from src_train.anatomy import lung_field


def test_lung_field_keeps_the_lungs_and_what_is_inside_them() -> None:
    ct = chest((4, 64, 80))
    hu = ct.hu.copy()
    hu[1, 30:34, 28:32] = 50  # a solid nodule inside the left lung
    field = lung_field(hu, ct.geometry.spacing_irc_mm)
    lungs = (hu > -900) & (hu < -400)
    assert field[:, 32, 30].all()  # the lung and the nodule inside it
    assert not field[:, 0, 0].any() and not field[:, 32, 40].any()  # outside air, mediastinum
    assert field[lungs].mean() > 0.9  # computed on every second pixel: edges may be lost
    wide = lung_field(hu, ct.geometry.spacing_irc_mm, margin_mm=5.0)
    assert wide[lungs].all() and (wide | ~field).all() and not wide[:, 0, 0].any()
