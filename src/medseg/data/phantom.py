"""A synthetic micro-ultrasound prostate phantom: medseg's built-in data set (no download).

Each patient is a ``D×H×W`` volume (default ``24×128×128``, spacing ``(1.0, 0.3, 0.3)`` mm,
axis order ``z, y, x``). The transducer is at the top (row 0): the beam runs down the rows.

What is simulated, per patient with random parameters:

* a prostate-like gland: an ellipsoid with a blunt base (low ``z``) that tapers to the **apex**
  (high ``z``), lobulated contour (cos 2θ..4θ terms) and a small anterior midline notch;
* the gland is hypoechoic (its echo is 45–60 % of the surrounding tissue) inside a smooth,
  slowly varying background;
* a bright capsule line on the boundary, which is **faint at the top-centre midline** (towards
  the urethra / bladder neck: there the boundary is blurred and the tissue just outside is as
  dark as the gland) **and in the apex slices** (the gland's contrast fades);
* 1–3 bright calcifications inside the gland, each casting a dark acoustic shadow straight
  down the rows (along the beam) below it;
* depth attenuation (exponential in the row index);
* multiplicative, spatially correlated Rayleigh speckle, then log compression (40 dB) to
  0..255, rounded to integers (stored as float32 in memory, uint8 in NIfTI files).

Annotations: ``expert`` is the true gland. ``non_expert`` is the same gland with its boundary
moved where it is faint: radially shifted (in or out, by 25–45 %) around the top-centre
midline, and shrunk/grown plus shortened/lengthened in the apex slices, with a tiny global
wobble elsewhere. So ``expert XOR non_expert`` lies mostly in the *faint region*: rows above the
gland centre within ``meta["phantom"]["midline_halfwidth_px"]`` columns of its centre column,
plus the slices ``z >= meta["phantom"]["apex_z"]`` (see :func:`faint_region`). Their Dice is
typically 0.89–0.96 (mean about 0.93 for the default seed).

Everything is drawn from ``numpy.random.default_rng([seed, index])``: the same seed gives
byte-identical arrays, and a case can be generated on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from medseg.data.io import write_volume
from medseg.data.sample import Sample

DEFAULT_SHAPE: tuple[int, int, int] = (24, 128, 128)
DEFAULT_SPACING: tuple[float, float, float] = (1.0, 0.3, 0.3)
DEFAULT_N_PATIENTS = 10
_DYN_RANGE_DB = 40.0


def phantom_case_id(index: int, n_patients: int = DEFAULT_N_PATIENTS) -> str:
    """``phantom_00``-style id, zero-padded so that ids sort in index order."""
    width = max(2, len(str(max(n_patients - 1, 0))))
    return f"phantom_{index:0{width}d}"


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angle wrapped to (-π, π]."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    n = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return n / (n.std() + 1e-8)


def _gland(
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    p: dict[str, Any],
    radial_gain: np.ndarray | float,
    apex_gain: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance (px, <0 inside), angle θ and normalized z of the gland surface.

    ``radial_gain`` scales the contour radius (1 = the true gland); ``apex_gain`` scales the
    gland length on the apex side.
    """
    cz, cy, cx = p["center"]
    rz, ry, rx = p["radii"]
    rz_z = np.where(z > cz, rz * apex_gain, rz)
    zn = (z - cz) / rz_z
    az = np.abs(zn)
    # blunt base (zn < 0), tapering apex (zn > 0)
    prof = np.where(
        zn < 0,
        np.sqrt(np.clip(1 - az**4, 0, 1)),
        np.sqrt(np.clip(1 - az**2, 0, 1)) * (1 - p["taper"] * np.clip(zn, 0, 1)),
    )
    prof = np.maximum(prof, 1e-3)
    dy, dx = (y - cy) / (ry * prof), (x - cx) / (rx * prof)
    theta = np.arctan2(dy, dx)
    rho = np.sqrt(dy**2 + dx**2)
    lob = sum(a * np.cos(k * theta + ph) for k, a, ph in p["lobes"])
    notch = p["notch"] * np.exp(-0.5 * (_wrap(theta + np.pi / 2) / 0.3) ** 2)
    R = (1 + lob - notch) * radial_gain
    scale = 0.5 * (rx + ry) * prof
    sd = (rho - R) * scale
    sd = np.where(az >= 1, np.maximum(sd, (az - 1) * rz + 1.0), sd)  # outside beyond the ends
    return sd.astype(np.float32), theta.astype(np.float32), zn.astype(np.float32)


def _params(rng: np.random.Generator, shape: tuple[int, int, int]) -> dict[str, Any]:
    D, H, W = shape
    return {
        "center": (
            (D - 1) / 2 + rng.uniform(-0.05, 0.05) * D,
            H * rng.uniform(0.46, 0.56),
            W * rng.uniform(0.44, 0.56),
        ),
        "radii": (D * rng.uniform(0.40, 0.46), H * rng.uniform(0.20, 0.26), W * rng.uniform(0.26, 0.33)),
        "taper": rng.uniform(0.25, 0.40),
        "lobes": [(k, rng.uniform(0.0, 0.05), rng.uniform(-np.pi, np.pi)) for k in (2, 3, 4)],
        "notch": rng.uniform(0.04, 0.10),
        "gland_echo": rng.uniform(0.45, 0.60),
        "capsule": rng.uniform(0.6, 1.0),
        "attenuation": rng.uniform(0.6, 1.2),
        "mid_shift": rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.45),
        "apex_shift": rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.45),
        "apex_len": 1 + rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.10),
    }


def _faint_weights(theta: np.ndarray, zn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Midline (top-centre) and apex faintness weights in [0, 1]."""
    w_mid = np.exp(-0.5 * (_wrap(theta + np.pi / 2) / 0.35) ** 2)
    w_apex = np.clip((zn - 0.45) / 0.35, 0, 1)
    return w_mid.astype(np.float32), w_apex.astype(np.float32)


def generate_phantom_case(
    index: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    seed: int = 0,
    n_patients: int = DEFAULT_N_PATIENTS,
) -> Sample:
    """Generate patient ``index`` of the phantom as a 3D :class:`Sample` (see module docstring).

    ``n_patients`` only sets the zero padding of the case id.
    """
    D, H, W = (int(s) for s in shape)
    if min(D, H, W) < 4:
        raise ValueError(f"phantom shape must be at least 4 per axis, got {shape}")
    rng = np.random.default_rng([int(seed), int(index)])
    p = _params(rng, (D, H, W))
    z, y, x = np.meshgrid(
        np.arange(D, dtype=np.float32),
        np.arange(H, dtype=np.float32),
        np.arange(W, dtype=np.float32),
        indexing="ij",
    )

    sd, theta, zn = _gland(z, y, x, p, 1.0, 1.0)
    expert = (sd <= 0).astype(np.uint8)
    w_mid, w_apex = _faint_weights(theta, zn)
    faint = np.maximum(w_mid, w_apex)

    # echo (linear) before speckle
    bg = np.exp(0.12 * _smooth_noise(rng, (D, H, W), (1.5, 10, 10)))  # slow tissue variation, > 0
    tau = 0.8 + 4.0 * faint  # blurred boundary where faint
    inside = 1.0 / (1.0 + np.exp(np.clip(sd / tau, -30, 30)))
    g = p["gland_echo"] - 1.0
    contrast = g * (1 - 0.6 * w_apex)
    # just outside the midline the tissue is as dark as the gland: the boundary is ambiguous
    dark_out = g * 0.8 * w_mid * np.exp(-np.clip(sd, 0, None) / 8.0) * (1 - inside)
    echo = bg * (1 + contrast * inside + dark_out)
    echo = echo + p["capsule"] * (1 - 0.9 * faint) * np.exp(-0.5 * (sd / 1.2) ** 2)

    # calcifications with acoustic shadows down the rows
    calcs = []
    cand = np.argwhere((sd < -3) & (zn > -0.6) & (zn < 0.4))
    for _ in range(int(rng.integers(1, 4))):
        if len(cand) == 0:
            break
        cz_, cy_, cx_ = cand[int(rng.integers(len(cand)))].astype(float)
        r = rng.uniform(1.0, 2.0)
        blob = np.exp(-0.5 * (((z - cz_) / 0.7) ** 2 + ((y - cy_) / r) ** 2 + ((x - cx_) / r) ** 2))
        echo = echo + rng.uniform(2.5, 4.0) * blob
        below = np.clip((y - cy_ - r) / 2.0, 0, 1)  # starts just under the calcification
        lateral = np.exp(-0.5 * ((x - cx_) / (r + 1.0)) ** 2) * np.exp(-0.5 * ((z - cz_) / 0.8) ** 2)
        strength = rng.uniform(0.6, 0.85) * np.exp(-np.clip(y - cy_, 0, None) / (0.8 * H))
        echo = echo * (1 - strength * below * lateral)
        calcs.append((float(cz_), float(cy_), float(cx_), float(r)))

    echo = echo * np.exp(-p["attenuation"] * y / H)  # depth attenuation
    # correlated Rayleigh speckle (elongated laterally), mean 1
    sig = (0.5, 0.8, 1.6)
    re_ = gaussian_filter(rng.standard_normal((D, H, W)).astype(np.float32), sig)
    im_ = gaussian_filter(rng.standard_normal((D, H, W)).astype(np.float32), sig)
    speck = np.sqrt(re_**2 + im_**2)
    speck /= speck.mean()
    intensity = np.clip(echo, 1e-3, None) * speck
    db = 20 * np.log10(intensity / 4.0 + 1e-6)  # 0 dB at 4× the mean tissue echo
    image = np.round(255 * np.clip((db + _DYN_RANGE_DB) / _DYN_RANGE_DB, 0, 1)).astype(np.float32)

    # non-expert: boundary moved where it is faint (midline, apex), tiny wobble elsewhere
    wobble = 1 + 0.005 * np.cos(3 * theta + rng.uniform(-np.pi, np.pi))
    gain = wobble * (1 + p["mid_shift"] * w_mid + p["apex_shift"] * w_apex)
    sd_ne, _, _ = _gland(z, y, x, p, gain, p["apex_len"])
    non_expert = (sd_ne <= 0).astype(np.uint8)

    cz, cy, cx = p["center"]
    rz, ry, rx = p["radii"]
    meta = {
        "phantom": {
            "seed": int(seed),
            "index": int(index),
            "center_zyx": (float(cz), float(cy), float(cx)),
            "radii_zyx": (float(rz), float(ry), float(rx)),
            "apex_z": float(cz + 0.45 * rz),
            "midline_halfwidth_px": float(0.75 * rx),
            "calcifications_zyxr": calcs,
        },
        "spacing_assumed": False,
    }
    return Sample(
        image=image[None],
        masks={"expert": expert, "non_expert": non_expert},
        target="expert",
        spacing=tuple(float(s) for s in spacing),
        case_id=phantom_case_id(index, n_patients),
        source_path=f"<phantom seed={seed} index={index}>",
        meta=meta,
    )


def faint_region(sample: Sample) -> np.ndarray:
    """Boolean ``D×H×W`` mask of the documented faint region of a phantom sample.

    Rows above the gland centre within ``midline_halfwidth_px`` of its centre column, plus every
    slice ``z >= apex_z``.
    """
    info = sample.meta["phantom"]
    D, H, W = sample.spatial_shape
    _, cy, cx = info["center_zyx"]
    z, y, x = np.ogrid[:D, :H, :W]
    mid = (y < cy) & (np.abs(x - cx) <= info["midline_halfwidth_px"])
    return np.broadcast_to(mid | (z >= info["apex_z"]), (D, H, W)).copy()


def generate_phantom(
    n_patients: int = DEFAULT_N_PATIENTS,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    seed: int = 0,
) -> list[Sample]:
    """``n_patients`` phantom volumes as 3D samples (annotators ``expert``, ``non_expert``)."""
    return [generate_phantom_case(i, shape, spacing, seed, n_patients) for i in range(n_patients)]


def write_phantom_microus(
    out_dir: str | Path,
    n_train: int = 8,
    n_test: int = 2,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> Path:
    """Write phantom patients in the exact MicroSegNet (Zenodo 10475293) layout; return the root.

    Patients ``0..n_train-1`` become ``train_01``..., the next ``n_test`` become ``test_01``...;
    both subsets get ``expert_annotations`` and ``non_expert_annotations``. Scans are uint8 NIfTI
    (``.nii.gz``) whose affine/zooms carry ``spacing``; masks are uint8 0/1. Read back with
    ``build("microus", root=out_dir)``.
    """
    root = Path(out_dir)
    n_total = n_train + n_test
    for i in range(n_total):
        subset, k = ("train", i + 1) if i < n_train else ("test", i - n_train + 1)
        s = generate_phantom_case(i, shape, spacing, seed, n_total)
        tag = f"{subset}_{k:02d}"
        base = root / subset
        write_volume(
            base / "micro_ultrasound_scans" / f"microUS_{tag}.nii.gz",
            s.image[0].astype(np.uint8),
            spacing=spacing,
        )
        write_volume(
            base / "expert_annotations" / f"expert_annotation_{tag}.nii.gz",
            s.masks["expert"],
            spacing=spacing,
        )
        write_volume(
            base / "non_expert_annotations" / f"nonexpert_annotation_{tag}.nii.gz",
            s.masks["non_expert"],
            spacing=spacing,
        )
    return root
