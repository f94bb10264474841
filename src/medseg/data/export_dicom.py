"""Any medseg source's volumes written as DICOM series, for trying DICOM pipelines end to end.

Each 3D case becomes ``OUT/<case>/slice_NNNN.dcm`` (:func:`medseg.data.dicom.write_dicom_series`,
one uncompressed CT-like series per case, first channel) and its target mask
``OUT/<case>_mask.nii.gz`` on the same grid. The intensities are stored as int16 with a
RescaleSlope / RescaleIntercept chosen per case so that the full range fits (values that already
are integers in the int16 range, such as HU, are kept exactly with slope 1); the sample's direction
and origin are kept when it has them.

``OUT`` is written whole under a hidden name beside it and renamed into place when complete; an
existing non-empty ``OUT`` is an error unless ``overwrite``, which replaces a folder that an
earlier export made (it holds :data:`~medseg.output_dirs.MARKER`) as a whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.dicom import read_dicom_series, write_dicom_series
from medseg.data.io import write_volume
from medseg.data.sources.base import Source
from medseg.errors import ConfigError, DataError
from medseg.io_utils import write_text_atomic
from medseg.output_dirs import MARKER, discard_dir, replace_dir, staging_dir

_INT16_SPAN = 65000.0  # a little under 2**16 so that rounding never overflows


def int16_rescale(volume: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) that store ``volume`` in int16: 1 and 0 for int16-valued data."""
    lo, hi = float(volume.min()), float(volume.max())
    if np.array_equal(volume, np.round(volume)) and lo >= -32768 and hi <= 32767:
        return 1.0, 0.0
    slope = max((hi - lo) / _INT16_SPAN, 1e-12)
    return slope, (lo + hi) / 2


def export_dicom(source: Source, out_root: str | Path, overwrite: bool = False) -> list[Path]:
    """Write every 3D case of ``source`` as a DICOM series folder (and its mask as NIfTI)."""
    target = Path(out_root)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"--out {target}: is a file, not a folder; name a folder")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise DataError(
                "the --out folder exists and is not empty; pass --overwrite to replace it as a whole",
                target,
            )
        if not (target / MARKER).is_file():
            raise DataError(
                f"--overwrite replaces only a folder that medseg made (it holds {MARKER}); this one "
                "holds other files: empty it yourself, or choose another --out",
                target,
            )
    out = staging_dir(target)
    try:
        names = _write_series(source, out)
        write_text_atomic(out / MARKER, "written by: medseg data export --to dicom\n")
    except BaseException:
        discard_dir(out)
        raise
    replace_dir(out, target)
    return [target / name for name in names]


def _write_series(source: Source, out: Path) -> list[str]:
    """Every case into ``out``; returns the series folder names."""
    folders = []
    for case in source.case_ids():
        for sample in source.load_case(case):
            if sample.ndim != 3:
                raise DataError(f"case {case!r} is 2D; DICOM export writes volumes", sample.source_path)
            volume = sample.image[0].astype(np.float64)
            slope, intercept = int16_rescale(volume)
            direction = sample.meta.get("direction")
            origin = sample.meta.get("origin", (0.0, 0.0, 0.0))
            folder = out / case
            write_dicom_series(
                folder, volume, sample.spacing, origin, direction, slope, intercept, patient_id=case
            )
            if sample.masks:
                _, _, meta = read_dicom_series(folder)
                write_volume(out / f"{case}_mask.nii.gz", sample.target_mask.astype(np.uint8), meta)
            folders.append(folder.name)
    return folders
