"""DICOM Segmentation (DICOM-SEG) out, and back in, with highdicom.

A predicted label map on the grid of a DICOM series (:func:`medseg.data.dicom.read_dicom_series`)
becomes one binary DICOM-SEG object (PS3.3 A.51) that references the series' SOPInstanceUIDs frame
by frame, with one segment per foreground label. Each segment has a label and two SNOMED CT codes,
a category and a type. By default they come from the label's name: the type is the SNOMED CT
concept of that name when pydicom's code dictionary has one (``prostate`` → SCT 41216001), else
"Tissue" (85756007); the category is "Tissue", or "Morphologically Abnormal Structure" for a
lesion, tumour or neoplasm. A :class:`SegmentSpec` sets them explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError
from medseg.io_utils import atomic_path

_ABNORMAL = ("lesion", "tumor", "tumour", "neoplasm", "mass", "nodule", "metastasis")


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: the label value in the mask, its name, and its SNOMED CT codes as
    ``(code value, coding scheme, meaning)``; ``None`` codes are derived from the name."""

    label: int
    name: str
    category: tuple[str, str, str] | None = None
    type: tuple[str, str, str] | None = None


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", " ").replace("_", " ").split())


def default_codes(name: str) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """(category, type) codes of a segment named ``name`` (module docstring)."""
    from pydicom.sr.codedict import codes

    abnormal = any(word in name.lower() for word in _ABNORMAL)
    category = codes.SCT.MorphologicallyAbnormalStructure if abnormal else codes.SCT.Tissue
    try:
        kind = getattr(codes.SCT, _camel(name))
    except AttributeError:
        kind = codes.SCT.Lesion if abnormal else codes.SCT.Tissue
    as_tuple = lambda c: (str(c.value), str(c.scheme_designator), str(c.meaning))  # noqa: E731
    return as_tuple(category), as_tuple(kind)


def segment_specs(
    labels: Sequence[int],
    label_names: Sequence[str] | Mapping[int, str] | None = None,
    segments: Sequence[Mapping[str, Any]] | None = None,
) -> list[SegmentSpec]:
    """The segments of the foreground ``labels``.

    ``label_names`` names label i (a list indexed by class index, background first, as config
    ``data.label_names``; or a mapping label → name); ``segments`` (config option) is a list of
    ``{label, name, category: [value, scheme, meaning], type: [...]}`` that overrides both.
    Unnamed labels are called ``label <value>``.
    """
    by_label: dict[int, SegmentSpec] = {}
    for item in segments or []:
        if "label" not in item or "name" not in item:
            raise DataError(f"each segment needs 'label' and 'name', got {dict(item)}")
        for key in ("category", "type"):
            if item.get(key) is not None and len(item[key]) != 3:
                raise DataError(
                    f"segment {key} must be [code value, coding scheme, meaning], got {item[key]}"
                )
        by_label[int(item["label"])] = SegmentSpec(
            int(item["label"]),
            str(item["name"]),
            None if item.get("category") is None else tuple(str(v) for v in item["category"]),  # type: ignore[arg-type]
            None if item.get("type") is None else tuple(str(v) for v in item["type"]),  # type: ignore[arg-type]
        )
    out = []
    for label in labels:
        if label in by_label:
            out.append(by_label[label])
            continue
        if isinstance(label_names, Mapping):
            name = label_names.get(label)
        elif label_names is not None and 0 <= label < len(label_names):
            name = label_names[label]
        else:
            name = None
        out.append(SegmentSpec(int(label), str(name) if name else f"label {label}"))
    return out


def write_dicom_seg(
    mask_zyx: np.ndarray,
    source_files: Sequence[str | Path],
    path: str | Path,
    segments: Sequence[SegmentSpec] | None = None,
    algorithm: str = "medseg",
    algorithm_version: str = "0",
    series_description: str = "medseg segmentation",
) -> Path:
    """Write a label map as a binary DICOM-SEG that references the series in ``source_files``.

    Args:
        mask_zyx: ``D×H×W`` integer labels (0 = background), slice z on ``source_files[z]`` (the
            slice order of :func:`~medseg.data.dicom.read_dicom_series`'s ``meta["files"]``).
        source_files: the series' files, one per slice.
        path: the ``.dcm`` file to write.
        segments: one per foreground label (:func:`segment_specs`); default: every label present.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from medseg import __version__

    path = Path(path)
    mask = np.asarray(mask_zyx)
    if mask.ndim != 3 or mask.shape[0] != len(source_files):
        raise DataError(
            f"mask of shape {mask.shape} does not fit a series of {len(source_files)} slices", path
        )
    if mask.dtype.kind not in "biu" or mask.min(initial=0) < 0:
        raise DataError(f"mask must hold non-negative integer labels, got dtype {mask.dtype}", path)
    if segments is None:
        segments = segment_specs([int(v) for v in np.unique(mask) if v != 0])
    sources = [pydicom.dcmread(f) for f in source_files]
    if sources and (int(sources[0].Rows), int(sources[0].Columns)) != mask.shape[1:]:
        raise DataError(f"mask slices {mask.shape[1:]} differ from the DICOM matrix", source_files[0])
    # segment numbers are 1..N in the object; labels map onto them
    labels = np.zeros(mask.shape, np.uint16)
    descriptions = []
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    for number, spec in enumerate(segments, start=1):
        labels[mask == spec.label] = number
        category, kind = default_codes(spec.name)
        category = spec.category or category
        kind = spec.type or kind
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=spec.name,
                segmented_property_category=hd.sr.CodedConcept(*category),
                segmented_property_type=hd.sr.CodedConcept(*kind),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=identification,
            )
        )
    if not descriptions:
        raise DataError("no segments to write (the mask is empty and no segments were given)", path)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=algorithm,
        software_versions=str(__version__),
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=False,
    )
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def read_dicom_seg(
    path: str | Path, sop_instance_uids: Sequence[str]
) -> tuple[np.ndarray, list[SegmentSpec]]:
    """A DICOM-SEG's label map on the series with ``sop_instance_uids`` (slice order) and its
    segments; voxel value = the segment's number (1..N) in the object."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except (OSError, ValueError, AttributeError, KeyError) as e:
        raise DataError(f"cannot read DICOM-SEG ({type(e).__name__}: {e})", path) from e
    numbers = list(seg.get_segment_numbers())
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(sop_instance_uids),
        segment_numbers=numbers,
        combine_segments=True,
        relabel=False,
        ignore_spatial_locations=True,
    )
    specs = []
    for number in numbers:
        description = seg.get_segment_description(number)
        category = description.segmented_property_category
        kind = description.segmented_property_type
        specs.append(
            SegmentSpec(
                number,
                str(description.segment_label),
                (str(category.value), str(category.scheme_designator), str(category.meaning)),
                (str(kind.value), str(kind.scheme_designator), str(kind.meaning)),
            )
        )
    return np.asarray(pixels), specs


#: ``medseg predict --format``: ``auto`` = the input's own format (NIfTI for a DICOM series)
OUTPUT_FORMATS = ("auto", "dicom-seg")


def check_output_format(output_format: str) -> None:
    """Raise a :class:`DataError` for an unknown prediction output format."""
    if output_format not in OUTPUT_FORMATS:
        raise DataError(f"output format must be one of {OUTPUT_FORMATS}, got {output_format!r}")


def write_prediction(
    mask: np.ndarray,
    meta: Mapping[str, Any],
    out_dir: str | Path,
    stem: str,
    output_format: str,
    label_names: Sequence[str] | None = None,
    segments: Sequence[Mapping[str, Any]] | None = None,
    class_values: Sequence[int] | None = None,
) -> Path:
    """A predicted mask of a DICOM series: ``<stem>_seg.dcm`` (DICOM-SEG) for ``dicom-seg``, else
    ``<stem>_mask.nii.gz`` on the series' grid.

    ``label_names`` are indexed by class (``class_values[i]`` is class i's value in ``mask``; a
    binary mask has values 0/1); ``segments`` override them (:func:`segment_specs`).
    """
    from medseg.data.io import write_volume

    check_output_format(output_format)
    out = Path(out_dir)
    if output_format != "dicom-seg":
        return write_volume(out / f"{stem}_mask.nii.gz", mask, meta)
    if meta.get("format") != "dicom" or not meta.get("files"):
        raise DataError("--format dicom-seg needs a DICOM series as input", meta.get("path"))
    values = list(class_values) if class_values is not None else [0, 1]
    names = None
    if label_names is not None:
        names = {int(v): str(n) for v, n in zip(values, label_names, strict=False)}
    specs = segment_specs([v for v in values if v != 0], names, segments)
    return write_dicom_seg(mask, meta["files"], out / f"{stem}_seg.dcm", specs)
