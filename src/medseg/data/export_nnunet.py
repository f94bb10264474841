"""Any medseg source written as an nnU-Net v2 raw data set (``DatasetXXX_Name/``).

Each case is written as ``imagesTr/ID_0000.nii.gz`` (one file per channel) and
``labelsTr/ID.nii.gz`` (uint8 labels: the target mask; a class-index map for a multi-class source),
with the sample's spacing, and its geometry when it has one (NIfTI affine, or NRRD/DICOM origin and
direction); unlabeled cases go to ``imagesTs/``. A 2D sample becomes a one-slice volume (nnU-Net
reads it as 2D data), with a through-plane spacing of 999 mm as nnU-Net's own 2D converters use.
``ID`` is the case id, or ``<case id>_<NNN>`` for the images of a case with several (HC18
subjects). ``dataset.json`` has ``channel_names``, ``labels``, ``numTraining`` and ``file_ending``,
plus ``medseg_patients`` (ID → case id), so that a split can keep a patient's images together.

So a user can train nnU-Net on exactly the cases medseg reads and score both with
``medseg evaluate --pred/--gt``.

The data set folder is written whole under a hidden name beside its target and renamed into
place when complete: an existing data set folder, or another folder with the same dataset id
(``Dataset501_*``, which nnU-Net refuses to tell apart), is an error unless ``overwrite``, which
replaces it as a whole (no stale cases of an earlier, larger export are left behind).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import write_volume
from medseg.data.sample import Sample
from medseg.data.sources.base import Source
from medseg.errors import DataError
from medseg.io_utils import write_text_atomic
from medseg.output_dirs import discard_dir, replace_dir, staging_dir

FILE_ENDING = ".nii.gz"
_NAME_RE = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_-]+$")
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{id:03d}_{name}`` as nnU-Net requires (id 1..999, name without spaces)."""
    if not 1 <= int(dataset_id) <= 999:
        raise DataError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    folder = f"Dataset{int(dataset_id):03d}_{name}"
    if not _NAME_RE.match(folder):
        raise DataError(f"dataset name {name!r} must be letters, digits, '_' or '-'")
    return folder


def _geometry(sample: Sample) -> dict[str, Any] | None:
    meta = sample.meta
    if sample.ndim == 3 and ("affine" in meta or "origin" in meta):
        keys = ("affine", "header", "origin", "direction", "spacing_xyz")
        return {k: meta[k] for k in keys if k in meta}
    return None


def _as_volume(array: np.ndarray, sample: Sample) -> tuple[np.ndarray, tuple[float, ...]]:
    if sample.ndim == 3:
        return array, sample.spacing
    return array[None], (999.0, *sample.spacing)


def case_identifiers(samples: Sequence[Sample]) -> list[str]:
    """The nnU-Net case id each sample is written under, in order: the case id made file-safe, or
    ``<case id>_<NNN>`` (1-based, in list order) for the images of a case with several."""
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.case_id] = counts.get(s.case_id, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for s in samples:
        base = _SAFE_ID.sub("-", s.case_id)
        if counts[s.case_id] > 1:
            seen[s.case_id] = seen.get(s.case_id, 0) + 1
            base = f"{base}_{seen[s.case_id]:03d}"
        out.append(base)
    return out


def export_nnunet(
    source: Source,
    out_root: str | Path,
    dataset_id: int = 501,
    name: str = "medseg",
    label_names: Sequence[str] | None = None,
    channel_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``source`` under ``out_root/Dataset{id}_{name}/`` in nnU-Net v2's raw layout.

    Args:
        source: any medseg source.
        out_root: the folder that gets the data set folder (nnU-Net's ``nnUNet_raw``).
        label_names: names of classes 0..K-1 (default: the samples' ``meta["label_names"]``, else
            ``background`` and the target annotator).
        channel_names: one name per image channel (default: ``meta["channel_names"]``, else
            ``channel_<i>``).
        overwrite: replace an existing data set folder (and any other folder with the same id) as
            a whole; without it either is an error.

    Returns:
        The data set folder.
    """
    check_export_target(out_root, dataset_id, name, overwrite)
    return export_nnunet_samples(
        source.load_all(),
        out_root,
        dataset_id,
        name,
        label_names,
        channel_names,
        overwrite,
        description=f"exported by medseg from the {type(source).__name__} at {source.root or 'memory'}",
        where=source.root,
    )


def export_nnunet_samples(
    samples: Sequence[Sample],
    out_root: str | Path,
    dataset_id: int = 501,
    name: str = "medseg",
    label_names: Sequence[str] | None = None,
    channel_names: Sequence[str] | None = None,
    overwrite: bool = False,
    description: str = "exported by medseg",
    where: str | Path | None = None,
) -> Path:
    """:func:`export_nnunet` for samples already in memory (e.g. one split's train and val cases).

    Each sample is written under ``case_identifiers(samples)[i]``; ``where`` names the data in
    error messages.
    """
    folder, same_id = check_export_target(out_root, dataset_id, name, overwrite)
    if not samples:
        raise DataError("no samples to export", where)
    if any(s.slice_index is not None for s in samples):
        raise DataError("the source gives slices of volumes; export the volumes", where)
    channels = {s.image.shape[0] for s in samples}
    if len(channels) != 1:
        raise DataError(f"cases have different channel counts {sorted(channels)}", where)
    n_channels = channels.pop()
    num_classes = {int(s.meta.get("num_classes") or 2) for s in samples if s.masks}
    if len(num_classes) > 1:
        raise DataError(f"cases have different class counts {sorted(num_classes)}", where)
    k = num_classes.pop() if num_classes else 2
    first = samples[0]
    names = list(label_names or first.meta.get("label_names") or ["background", first.target])
    if len(names) != k:
        raise DataError(f"{len(names)} label names {names} for {k} classes", where)
    chans = list(
        channel_names or first.meta.get("channel_names") or [f"channel_{i}" for i in range(n_channels)]
    )
    if len(chans) != n_channels:
        raise DataError(f"{len(chans)} channel names {chans} for {n_channels} channels", where)

    staging = staging_dir(folder)
    try:
        _write_cases(samples, staging, n_channels, chans, names, name, description)
    except BaseException:
        discard_dir(staging)
        raise
    for other in same_id:  # nnU-Net finds a data set by its id: one folder per id
        if other != folder:
            shutil.rmtree(other)
    return replace_dir(staging, folder)


def check_export_target(
    out_root: str | Path, dataset_id: int, name: str, overwrite: bool
) -> tuple[Path, list[Path]]:
    """The data set folder to write, and the existing folders it replaces (itself, or another
    ``Dataset{id}_*``): an error naming them unless ``overwrite``."""
    folder = Path(out_root) / dataset_folder_name(dataset_id, name)
    if Path(out_root).exists() and not Path(out_root).is_dir():
        raise DataError("--out is a file, not a folder; name the folder that gets the data set", out_root)
    prefix = f"Dataset{int(dataset_id):03d}_"
    same_id = (
        sorted(p for p in Path(out_root).iterdir() if p.is_dir() and p.name.startswith(prefix))
        if Path(out_root).is_dir()
        else []
    )
    same_id = [p for p in same_id if p != folder or any(p.iterdir())]
    if same_id and not overwrite:
        if same_id == [folder]:
            raise DataError(
                "the nnU-Net data set folder exists and is not empty; pass --overwrite to replace it "
                "as a whole",
                folder,
            )
        others = [p.name for p in same_id if p != folder]
        raise DataError(
            f"dataset id {int(dataset_id)} is taken by {others}: nnU-Net finds a data set by its id, "
            "so two folders with one id are refused; choose another --dataset-id, or pass --overwrite "
            "to replace it",
            out_root,
        )
    return folder, same_id


def _write_cases(
    samples: Sequence[Sample],
    folder: Path,
    n_channels: int,
    chans: list[str],
    names: list[str],
    name: str,
    description: str,
) -> None:
    """Every sample's channels and label into ``folder`` (imagesTr/labelsTr/imagesTs), and
    ``dataset.json``."""
    patients: dict[str, str] = {}
    n_training = 0
    for sample, identifier in zip(samples, case_identifiers(samples), strict=True):
        labelled = bool(sample.masks)
        images_dir = folder / ("imagesTr" if labelled else "imagesTs")
        geometry = _geometry(sample)
        for c in range(n_channels):
            volume, spacing = _as_volume(sample.image[c], sample)
            write_volume(
                images_dir / f"{identifier}_{c:04d}{FILE_ENDING}",
                volume.astype(np.float32),
                geometry,
                spacing,
            )
        if labelled:
            volume, spacing = _as_volume(sample.target_mask.astype(np.uint8), sample)
            write_volume(folder / "labelsTr" / f"{identifier}{FILE_ENDING}", volume, geometry, spacing)
            n_training += 1
        patients[identifier] = sample.case_id
    spec = {
        "channel_names": {str(i): n for i, n in enumerate(chans)},
        "labels": {n: i for i, n in enumerate(names)},
        "numTraining": n_training,
        "file_ending": FILE_ENDING,
        "name": name,
        "description": description,
        "medseg_patients": patients,
    }
    write_text_atomic(folder / "dataset.json", json.dumps(spec, indent=2))
