"""Generated MR series with the headers that Philips, GE and Siemens scanners write: for routing and domain tests.

The pixel data is the generated phantom of :mod:`pipelines.synthetic.mri_series` (no patient data), small
and downsampled; the header attributes are the ones each vendor fills, spelled as it spells them:

- Philips leaves SeriesDescription empty and names the protocol in ProtocolName (``T2W_TRA_BH SENSE``);
- GE writes SeriesDescription (``Sag 3D T1 BRAVO``) and ProtocolName, and BodyPartExamined as entered;
- Siemens writes both as the sequence card names them (``t2_haste_tra_mbh``).

No private elements, no identifying data: the patient attributes are the generator's synthetic ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.synthetic.mri_series import AXIAL, MRSeries, MRSeriesSpec, write_mr_series

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows anterior→posterior, columns head→foot


@dataclass(frozen=True)
class VendorStyle:
    """One vendor's way of writing one kind of series."""

    name: str
    spec: MRSeriesSpec

    def write(self, folder: Path, seed: int | None = None) -> MRSeries:
        spec = self.spec if seed is None else replace(self.spec, seed=seed)
        return write_mr_series(folder, spec)


def _style(name: str, *, seed: int, description: str, orientation: tuple[float, ...] = AXIAL,
           pixel_spacing_mm: float = 2.8, slice_thickness_mm: float = 4.0, lesions: int = 1,
           header: dict[str, object]) -> VendorStyle:
    spec = MRSeriesSpec(rows=96, columns=96, slices=16, pixel_spacing_mm=pixel_spacing_mm,
                        slice_thickness_mm=slice_thickness_mm, orientation=orientation,
                        series_description=description, lesions=lesions, seed=seed,
                        header=tuple(header.items()))
    return VendorStyle(name, spec)


PHILIPS_T2_ABDOMEN = _style("philips-t2-abdomen", seed=950_001, description="", header={
    "Manufacturer": "Philips Medical Systems",
    "ManufacturerModelName": "Ingenia",
    "SoftwareVersions": "5.4.1\\5.4.1.0",
    "SeriesDescription": "",  # Philips leaves it empty
    "ProtocolName": "T2W_TRA_BH SENSE",
    "BodyPartExamined": "ABDOMEN",
    "ScanningSequence": "SE",
    "SequenceVariant": "SK",
    "ScanOptions": "FS",
    "EchoTime": 80.0,
    "RepetitionTime": 1300.0,
    "EchoTrainLength": 72,
    "FlipAngle": 90.0,
    "MagneticFieldStrength": 1.5,
    "ImageType": ("ORIGINAL", "PRIMARY", "M_SE", "M", "SE"),
})

GE_BRAIN_T1 = _style("ge-brain-t1", seed=950_002, description="Sag 3D T1 BRAVO", orientation=SAGITTAL,
                     pixel_spacing_mm=2.0, slice_thickness_mm=2.0, lesions=0, header={
    "Manufacturer": "GE MEDICAL SYSTEMS",
    "ManufacturerModelName": "DISCOVERY MR750w",
    "SoftwareVersions": "DV26.0_R03_1831.b",
    "ProtocolName": "BRAIN ROUTINE",
    "BodyPartExamined": "BRAIN",
    "ScanningSequence": "GR",
    "SequenceVariant": "SS\\SP",
    "ScanOptions": "FAST_GEMS\\EDR_GEMS",
    "MRAcquisitionType": "3D",
    "EchoTime": 3.172,
    "RepetitionTime": 8.204,
    "InversionTime": 450.0,
    "FlipAngle": 12.0,
    "MagneticFieldStrength": 3.0,
})

SIEMENS_T2_HASTE_ABDOMEN = _style("siemens-t2-haste-abdomen", seed=950_003, description="t2_haste_tra_mbh",
                                  header={
    "Manufacturer": "SIEMENS",
    "ManufacturerModelName": "MAGNETOM Aera",
    "SoftwareVersions": "syngo MR E11",
    "ProtocolName": "t2_haste_tra_mbh",
    "BodyPartExamined": "LIVER",
    "ScanningSequence": "SE",
    "SequenceVariant": "SK\\SP",
    "ScanOptions": "PFP\\FS",
    "EchoTime": 95.0,
    "RepetitionTime": 1400.0,
    "EchoTrainLength": 128,
    "FlipAngle": 160.0,
    "MagneticFieldStrength": 1.5,
    "ImageType": ("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"),
})

STYLES: tuple[VendorStyle, ...] = (PHILIPS_T2_ABDOMEN, GE_BRAIN_T1, SIEMENS_T2_HASTE_ABDOMEN)
