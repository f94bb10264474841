"""The em_stack source (ISBI 2012 layout): chunks as cases, interior target, cell instances."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medseg.data import sources
from medseg.data.io import write_image
from medseg.data.sources.em_stack import cell_instances
from medseg.errors import DataError


def _write_stack(root: Path, depth: int = 4) -> None:
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir()
    for z in range(depth):
        label = np.full((16, 16), 255, np.uint8)
        label[:, 8] = 0  # a vertical membrane: two cells per section
        write_image(root / "image" / f"{z:02d}.png", np.full((16, 16), 10 * z, np.uint8))
        write_image(root / "label" / f"{z:02d}.png", label)


def test_em_stack_chunks_interior_and_instances(tmp_path: Path) -> None:
    _write_stack(tmp_path)
    src = sources.build("em_stack", root=tmp_path, chunks=[[0, 3], [3, 4]], spacing=[0.05, 0.004, 0.004])
    assert src.case_ids() == ["z00-02", "z03-03"]
    (sample,) = src.load_case("z00-02")
    assert sample.image.shape == (1, 3, 16, 16) and sample.spacing == (0.05, 0.004, 0.004)
    assert sample.target == "interior" and sample.target_mask[:, :, 8].sum() == 0
    instances = sample.meta["instances"]
    # two cells per section, labelled per section with ids unique over the chunk
    assert instances.max() == 6 and set(np.unique(instances[1])) == {0, 3, 4}
    assert np.array_equal(sample.meta["boundary"], 1 - sample.target_mask)


def test_cell_instances_2d_vs_3d() -> None:
    interior = np.ones((2, 4, 4), np.uint8)
    interior[:, :, 2] = 0
    assert cell_instances(interior, "2d").max() == 4
    assert cell_instances(interior, "3d").max() == 2


def test_em_stack_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="EM image"):
        sources.build("em_stack", root=tmp_path)
    _write_stack(tmp_path)
    with pytest.raises(DataError, match="outside"):
        sources.build("em_stack", root=tmp_path, chunks=[[0, 9]])
    (tmp_path / "label" / "01.png").unlink()
    with pytest.raises(DataError, match="no label"):
        sources.build("em_stack", root=tmp_path)


@pytest.mark.realdata
def test_em_stack_reads_isbi2012(shared_dataset: Callable[..., Path]) -> None:
    src = sources.build("em_stack", root=shared_dataset("em_isbi2012"), chunks=[[0, 20], [20, 30]])
    (sample,) = src.load_case("z20-29")
    assert sample.image.shape == (1, 10, 512, 512)
    assert sample.spacing == pytest.approx((50e-6, 4e-6, 4e-6))
    assert sample.meta["instances"].max() > 500  # ~100 cells per section
