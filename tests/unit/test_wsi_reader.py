"""The slide reader: resolution from the slide or the fallback, level choice, regions, errors as InputError."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from pipelines.errors import InputError
from pipelines.synthetic.slides import SlideSpec, write_slide
from pipelines.wsi.reader import SlideReader, choose_file
from tests.conftest import shared


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reader") / "s.tiff"
    write_slide(path, SlideSpec(width=4096, height=3072, mpp=0.5, ctc=4, ctm=1, seed=11))
    return path


def test_declared_resolution_and_level_choice(slide: Path) -> None:
    with SlideReader(slide, fallback_mpp_um=None) as reader:
        assert reader.format == "generic-tiff"
        assert (reader.resolution.mpp_x_um, reader.resolution.source) == (0.5, "declared")
        assert reader.resolution.warning is None
        assert reader.level_for(1.0).level == 1  # 0.5 µm/px x 2
        assert reader.level_for(0.5).level == 0
        assert reader.level_for(0.7).level == 0  # never a level coarser than asked
        assert reader.level_for(4.1).level == 3
        assert reader.l0_per_px(1.0) == (2.0, 2.0)


def test_a_region_at_the_processing_resolution_matches_level_0_downsampled(slide: Path) -> None:
    with SlideReader(slide, fallback_mpp_um=None) as reader:
        tile = reader.read(1000, 800, 256, 256, 1.0)
        assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8
        full = reader.read(1000, 800, 512, 512, 0.5)
        expected = cv2.resize(full, (256, 256), interpolation=cv2.INTER_AREA)
        assert np.abs(tile.astype(int) - expected).mean() < 4  # level 1 is level 0 halved (and JPEG again)
        odd = reader.read(1000, 800, 200, 100, 0.8)  # not a pyramid level: resampled from level 0
        assert odd.shape == (100, 200, 3)


def test_overview_is_read_in_chunks_at_the_asked_resolution(slide: Path) -> None:
    with SlideReader(slide, fallback_mpp_um=None) as reader:
        overview = reader.read_overview(8.0)
    assert overview.shape == (192, 256, 3)
    assert overview[0, 0].mean() > 200  # bare glass in the corner (brightfield)


def test_outside_the_slide_is_filled_not_black(slide: Path) -> None:
    with SlideReader(slide, fallback_mpp_um=None) as reader:
        beyond = reader.read(4096 - 64, 0, 128, 64, 0.5)
    assert beyond[:, 100:].min() == 255


def test_implausible_resolution_uses_the_fallback_with_a_warning() -> None:
    with SlideReader(shared("wsi/openslide-python_boxes.tiff"), fallback_mpp_um=0.5) as reader:
        assert (reader.resolution.mpp_x_um, reader.resolution.source) == (0.5, "fallback")
        assert "implausible resolution of 352.8 µm/px" in (reader.resolution.warning or "")
        assert "fallback of 0.5 µm/px" in (reader.resolution.warning or "")


def test_no_usable_resolution_and_no_fallback_is_refused() -> None:
    with pytest.raises(InputError, match=r"implausible resolution .* no fallback resolution is configured"):
        SlideReader(shared("wsi/openslide-python_boxes.tiff"), fallback_mpp_um=None)


def test_a_slide_without_any_resolution(tmp_path: Path) -> None:
    path = tmp_path / "plain.tiff"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    with pytest.raises(InputError, match="declares no resolution"):
        SlideReader(path, fallback_mpp_um=None)
    with SlideReader(path, fallback_mpp_um=0.25) as reader:
        assert reader.resolution.source == "fallback"
        assert reader.resolution.warning == (
            "slide declares no resolution (µm/px); processed at the configured fallback of 0.25 µm/px"
        )


def test_unsupported_corrupt_and_missing_files_are_input_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    with pytest.raises(InputError, match=r"notes\.svs: unsupported file"):
        SlideReader(text, fallback_mpp_um=0.5)
    with pytest.raises(InputError, match="corrupt or truncated"):
        SlideReader(shared("broken/openslide-python_unopenable.tiff"), fallback_mpp_um=0.5)
    with pytest.raises(InputError, match="no such file"):
        SlideReader(tmp_path / "absent.svs", fallback_mpp_um=0.5)
    # opens, but its tiles cannot be decoded: the error comes when reading
    with SlideReader(shared("broken/openslide-python_unreadable.svs"), fallback_mpp_um=0.5) as reader, pytest.raises(
        InputError, match="corrupt or truncated"
    ):
        reader.read(0, 0, 16, 16, 0.5)


def test_a_dicom_series_is_opened_from_one_of_its_instances(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    shutil.copytree(shared("wsi/dicom-boxes"), folder)
    (folder / "readme.txt").write_text("not dicom")
    chosen = choose_file(sorted(folder.iterdir()))
    assert chosen.suffix == ".dcm"
    with SlideReader.open(sorted(folder.iterdir()), fallback_mpp_um=None) as reader:
        assert reader.format == "dicom" and reader.resolution.mpp_x_um == pytest.approx(0.499)
    other = tmp_path / "other.txt"
    other.write_text("nor this")
    with pytest.raises(InputError, match="none of the 2 files is a whole-slide image"):
        choose_file([folder / "readme.txt", other])
