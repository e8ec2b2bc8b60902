from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series


def test_mr_series_geometry_is_consistent(tmp_path: Path) -> None:
    series = write_mr_series(tmp_path / "mr", MRSeriesSpec(slices=8, rows=32, columns=32, slice_thickness_mm=2.5))
    datasets = [pydicom.dcmread(p) for p in series.files]
    assert {ds.SeriesInstanceUID for ds in datasets} == {series.series_uid}
    assert len({ds.SOPInstanceUID for ds in datasets}) == 8
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    assert np.allclose(np.diff(z), 2.5)
    assert np.array_equal(datasets[3].pixel_array, series.volume[3])
    assert series.lesion_mask.max() >= 1
