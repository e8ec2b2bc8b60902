"""The radiomics wrapper against the parameter file it is configured by."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from pipelines.mri.feature_table import FeatureTable, extract_table
from pipelines.mri.radiomics import DEFAULT_PARAMS, RadiomicsError, RadiomicsExtractor
from tests.unit.test_mri_cases import small_case


@pytest.fixture(scope="module")
def extractor() -> RadiomicsExtractor:
    return RadiomicsExtractor()


def lesion_image(radius_vox: float = 6.0) -> tuple[sitk.Image, sitk.Image]:
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:20, :40, :40]
    mask = ((z - 10) ** 2 * 4 + (y - 20) ** 2 + (x - 20) ** 2 <= radius_vox**2).astype(np.uint16)
    values = rng.normal(300, 20, mask.shape) + 400 * mask
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((1.0, 1.0, 2.0))
    labels = sitk.GetImageFromArray(mask * 3)  # lesion label 3
    labels.CopyInformation(image)
    return image, labels


def test_parameter_file_asks_for_the_published_image_types_and_classes() -> None:
    params = yaml.safe_load(DEFAULT_PARAMS.read_text())
    assert params["imageType"]["LoG"]["sigma"] == [1.0, 2.0, 3.0]
    assert set(params["imageType"]) == {"Original", "LoG", "Wavelet"}
    assert set(params["featureClass"]) == {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}


def test_vector_carries_every_class_and_image_type_and_the_file_hash(extractor: RadiomicsExtractor) -> None:
    image, labels = lesion_image()
    vector = extractor.extract(image, labels, 3)
    assert vector.params_sha256 == hashlib.sha256(DEFAULT_PARAMS.read_bytes()).hexdigest()
    assert len(vector.names) == len(vector.values) > 1000
    assert not any(n.startswith("diagnostics_") for n in vector.names)
    prefixes = {n.split("_")[0] for n in vector.names}
    assert {"original", "log-sigma-1-0-mm-3D", "log-sigma-2-0-mm-3D", "log-sigma-3-0-mm-3D",
            "wavelet-LLL", "wavelet-HHH"} <= prefixes
    classes = {n.split("_")[1] for n in vector.names}
    assert classes == {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    assert np.all(np.isfinite(vector.values))
    assert vector.as_dict()["original_shape_VoxelVolume"] == pytest.approx(float(sitk.GetArrayFromImage(labels)
                                                                                  .astype(bool).sum()) * 2, rel=0.2)


def test_same_input_same_features_and_a_changed_file_changes_the_hash(tmp_path: Path,
                                                                     extractor: RadiomicsExtractor) -> None:
    image, labels = lesion_image()
    a, b = extractor.extract(image, labels, 3), extractor.extract(image, labels, 3)
    assert np.array_equal(a.values, b.values)
    changed = tmp_path / "radiomics.yaml"
    changed.write_text(DEFAULT_PARAMS.read_text().replace("binCount: 32", "binCount: 16"))
    other = RadiomicsExtractor(changed)
    assert other.sha256 != extractor.sha256
    changed_vector = other.extract(image, labels, 3)
    assert changed_vector.params_sha256 == other.sha256
    assert changed_vector.names == a.names and not np.array_equal(changed_vector.values, a.values)


def test_unusable_lesion_raises_radiomics_error(extractor: RadiomicsExtractor) -> None:
    image, labels = lesion_image()
    with pytest.raises(RadiomicsError, match="radiomics cannot describe lesion 7"):
        extractor.extract(image, labels, 7)  # no voxel carries label 7
    with pytest.raises(FileNotFoundError):
        RadiomicsExtractor(Path("/nonexistent/radiomics.yaml"))


def test_feature_table_round_trip(tmp_path: Path, extractor: RadiomicsExtractor) -> None:
    table = extract_table([small_case("a", seed=1, lesions=2)], extractor)
    assert len(table) == 2 and table.x.shape == (2, len(table.names))
    path = table.save_csv(tmp_path / "features.csv")
    again = FeatureTable.load_csv(path)
    assert again.names == table.names and again.keys == table.keys and again.params_sha256 == extractor.sha256
    assert np.array_equal(again.x, table.x) and np.array_equal(again.y, table.y)
