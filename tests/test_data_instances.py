"""medseg.data.instances: seed map, seeds → instances (Li et al. 2021), boundary targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.instances import boundary_targets, boundary_targets_torch, seed_map, seeds_to_instances


def test_seed_map_low_boundary_is_seed() -> None:
    mask = np.array([[0.95, 0.95, 0.5, 0.95, 0.9]])
    boundary = np.array([[0.1, 0.95, 0.1, 0.79, 0.1]])
    # seed ⇔ X_M > 0.9 and X_B < 0.8: low boundary seeds, a high boundary does not, a low mask does
    # not, and both inequalities are strict (X_M = 0.9 is no seed)
    np.testing.assert_array_equal(seed_map(mask, boundary), [[True, False, False, True, False]])
    # the human-sample setting T2 = 0.75 drops the 0.79 voxel
    np.testing.assert_array_equal(seed_map(mask, boundary, t2=0.75), [[True, False, False, False, False]])


def test_seed_map_checks_inputs() -> None:
    ok = np.full((3, 3), 0.5)
    with pytest.raises(ValueError, match=r"shape mismatch: mask_prob \(3, 3\) vs boundary_prob \(3, 4\)"):
        seed_map(ok, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="logits"):
        seed_map(ok * 10, ok)
    with pytest.raises(ValueError, match="boundary_prob contains NaN"):
        seed_map(ok, np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="divide uint8"):
        seed_map((ok * 255).astype(np.uint8), ok)


def _touching_pair(ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two boxes touching along x = 13|14 (one foreground blob), with a boundary ridge on the contact."""
    mask = np.zeros((4, 16, 30))
    mask[:, 3:13, 2:28] = 0.98
    mask[:, 3:13, 13:15] = 0.95  # the network is a little less sure on the contact
    boundary = np.zeros_like(mask)
    boundary[:, 3:13, 13:15] = 0.95
    if ndim == 2:
        return mask[1], boundary[1]
    return mask, boundary


@pytest.mark.parametrize("ndim", [2, 3])
def test_boundary_ridge_separates_touching_objects(ndim: int) -> None:
    mask, boundary = _touching_pair(ndim)
    labels = seeds_to_instances(mask, boundary, min_size=0)
    assert labels.dtype == np.uint32
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    left, right = np.unique(labels[..., 3:13, 2:13]), np.unique(labels[..., 3:13, 15:28])
    assert left.size == right.size == 1 and left[0] != right[0] and 0 not in (left[0], right[0])
    # every foreground voxel (X_M > T3) belongs to one of the two, and nothing outside
    np.testing.assert_array_equal(labels > 0, mask > 0.85)
    # without the ridge the blob is one object
    single = seeds_to_instances(mask, np.zeros_like(boundary), min_size=0)
    assert set(np.unique(single).tolist()) == {0, 1}


def test_min_size_drops_small_objects_and_renumbers() -> None:
    mask, boundary = _touching_pair()
    mask[1:3, 14:16, 0:2] = 0.99  # an 8-voxel speck
    assert np.unique(seeds_to_instances(mask, boundary, min_size=0)).size == 4
    labels = seeds_to_instances(mask, boundary, min_size=9)
    np.testing.assert_array_equal(np.unique(labels), [0, 1, 2])
    assert labels[1, 14, 0] == 0
    # min_size is a voxel count: at the size of the smaller of the pair it stays, one more drops it
    smaller = int(np.bincount(labels.ravel())[1:].min())
    assert seeds_to_instances(mask, boundary, min_size=smaller).max() == 2
    assert seeds_to_instances(mask, boundary, min_size=smaller + 1).max() == 1


def test_dilation_variant_grows_in_plane_only() -> None:
    mask = np.zeros((5, 20, 20))
    mask[2, 5:8, 5:8] = 0.99
    mask[2, 14:17, 14:17] = 0.99
    boundary = np.zeros_like(mask)
    labels = seeds_to_instances(mask, boundary, min_size=0, method="dilation")
    assert set(np.unique(labels).tolist()) == {0, 1, 2}
    # a (1, 7, 7) box grows each 3×3 seed by 3 px in y and x (to 9×9), never in z
    assert (labels[2] > 0).sum() == 2 * 81
    assert labels[[0, 1, 3, 4]].max() == 0
    with pytest.raises(ValueError, match="method must be"):
        seeds_to_instances(mask, boundary, method="agglomerate")  # type: ignore[arg-type]


def test_boundary_targets_hand_example() -> None:
    labels = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 1, 1, 2, 2, 0],
            [0, 1, 1, 2, 2, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    expected = np.array(
        [
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0],  # two rows below the objects: outside a 3×3 window
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(boundary_targets(labels), expected)
    wide = np.zeros((1, 11), np.int64)
    wide[0, 5:] = 1
    # width 2: the 5×5 window reaches 2 px across the edge on each side
    np.testing.assert_array_equal(np.flatnonzero(boundary_targets(wide, width=2)[0]), [3, 4, 5, 6])


def test_boundary_targets_are_per_slice() -> None:
    vol = np.zeros((3, 6, 6), np.int32)
    vol[1] = 4  # a change along z only: no in-plane edge anywhere
    assert not boundary_targets(vol).any()
    vol[1, 2:4, 2:4] = 5
    assert boundary_targets(vol)[1].any() and not boundary_targets(vol)[[0, 2]].any()


@pytest.mark.parametrize("width", [1, 2, 3])
@pytest.mark.parametrize("shape", [(17, 19), (5, 17, 19), (2, 1, 4, 17, 19)])
def test_boundary_targets_numpy_equals_torch(shape: tuple[int, ...], width: int) -> None:
    rng = np.random.default_rng(width)
    # blocky labels with many touching instances and background
    coarse = rng.integers(0, 6, size=(*shape[:-2], 3, 3))
    labels = coarse.repeat(8, axis=-2).repeat(8, axis=-1)[..., : shape[-2], : shape[-1]] * 1000
    ours = boundary_targets(labels, width)
    theirs = boundary_targets_torch(torch.from_numpy(labels), width)
    assert theirs.dtype == torch.bool and tuple(theirs.shape) == labels.shape
    np.testing.assert_array_equal(ours, theirs.numpy())
    assert 0 < ours.mean() < 1
    binary = labels > 0
    np.testing.assert_array_equal(
        boundary_targets(binary, width), boundary_targets_torch(torch.from_numpy(binary), width).numpy()
    )


def test_boundary_targets_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="integer or bool"):
        boundary_targets(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="integer or bool"):
        boundary_targets_torch(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="width must be a positive integer"):
        boundary_targets(np.zeros((4, 4), np.int32), width=0)
