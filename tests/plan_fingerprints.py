"""Fingerprints with chosen statistics, shared by the planner's tests."""

from __future__ import annotations

from dataclasses import replace

from medseg.data.fingerprint import ClassStats, Fingerprint, IntensityStats


def volume_fingerprint(**overrides: object) -> Fingerprint:
    """40 isotropic 1 mm volumes of 32×48×32 with one foreground class."""
    base = Fingerprint(
        n_cases=40,
        n_samples=40,
        spatial_dims=3,
        n_channels=1,
        num_classes=None,
        modality="mr",
        spacing_median=(1.0, 1.0, 1.0),
        spacing_p10=(1.0, 1.0, 1.0),
        anisotropy=1.0,
        shape_median=(32.0, 48.0, 32.0),
        shape_min=(28, 40, 28),
        shape_max=(36, 56, 36),
        intensity_foreground=(IntensityStats(100.0, 20.0, 50.0, 160.0, 0.0, 200.0),),
        intensity_image=(IntensityStats(60.0, 40.0, 0.0, 180.0, 0.0, 255.0),),
        classes=(ClassStats(1, 0.03, 1.0, 1.0, 1500.0, 1500.0, (0.5, 0.5, 0.5)),),
        empty_slice_share=0.3,
        n_voxels_total=40 * 32 * 48 * 32,
    )
    return replace(base, **overrides)
