"""Coded concepts of our reports: standard vocabularies where a concept exists, a private scheme otherwise.

Standard codes come from pydicom's code dictionary (SNOMED CT ``SCT``, DICOM ``DCM``, UCUM, the CIDs);
nothing here spells a standard code by hand. Concepts that no standard names (CTC/CTM counts, a triage score)
use the private scheme ``99ONCO`` (PS3.16 8.2: a designator starting with ``99`` is private), declared in the
Coding Scheme Identification Sequence of every object that uses it. UCUM is a grammar, not a list: the one
unit expression the dictionary lacks (per square millimetre) is written as UCUM defines it.
"""

from __future__ import annotations

import re

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99ONCO"
MAX_MEANING_CHARS = 64


def private(value: str, meaning: str) -> Code:
    """A concept of our private scheme."""
    return Code(value, PRIVATE_SCHEME, meaning[:MAX_MEANING_CHARS])


def coding_schemes() -> list[CodingSchemeIdentificationItem]:
    """Coding Scheme Identification Sequence items for the private scheme (a new item per object)."""
    return [
        CodingSchemeIdentificationItem(
            designator=PRIVATE_SCHEME,
            name="OncoAgent local concepts",
            version="1",
            responsible_organization="OncoAgent",
        )
    ]


# ------------------------------------------------------------------------------------------ document

REPORT_TITLE: Code = codes.cid7021.ImagingMeasurementReport
PROCEDURE_MRI: Code = codes.cid100.MRIUnspecifiedBodyRegion
PROCEDURE_SLIDE: Code = codes.DCM.WholeSlideImaging
OBSERVER_DEVICE: Code = codes.cid270.Device
ALGORITHM_FAMILY: Code = codes.cid7162.ArtificialIntelligence
# TID 1500's document-level "Qualitative Evaluations" container (row 12, UMLS C0034375): pydicom's dictionary
# lacks it, so it is written as PS3.16 gives it; its free text is a "Comment".
QUALITATIVE_EVALUATIONS: Code = Code("C0034375", "UMLS", "Qualitative Evaluations")
COMMENT: Code = codes.DCM.Comment

# ------------------------------------------------------------------------------------------ units

UNIT_NONE: Code = codes.UCUM.NoUnits
UNIT_MM: Code = codes.UCUM.Millimeter
UNIT_MM2: Code = codes.UCUM.SquareMillimeter
UNIT_MM3: Code = codes.UCUM.CubicMillimeter
UNIT_ML: Code = codes.UCUM.CubicCentimeter  # 1 mL = 1 cm³; UCUM's "mL" is not in the dictionary
UNIT_PER_MM2: Code = Code("/mm2", "UCUM", "per square millimeter")

# ------------------------------------------------------------------------------------------ slides

CELL_CATEGORY: Code = codes.SCT.Cell
CTC: Code = private("CTC", "Circulating tumour cell")
CTM: Code = private("CTM", "Circulating tumour microemboli")
CTC_COUNT: Code = private("CTC-COUNT", "Circulating tumour cell count")
CTM_COUNT: Code = private("CTM-COUNT", "Circulating tumour microemboli count")
CTC_DENSITY: Code = private("CTC-DENSITY", "Circulating tumour cells per tissue area")
CTM_DENSITY: Code = private("CTM-DENSITY", "Circulating tumour microemboli per tissue area")
TISSUE_AREA: Code = private("TISSUE-AREA", "Analysed tissue area")
PRIORITY_SCORE: Code = private("PRIORITY-SCORE", "Triage priority score")
PRIORITY: Code = codes.SCT.Priority
PRIORITY_LEVELS: dict[str, Code] = {"high": codes.SCT.High, "medium": codes.SCT.Medium, "low": codes.SCT.Low}
DETECTION_CONFIDENCE: Code = private("DET-CONFIDENCE", "Detection confidence")
CLUSTER_MEMBERS: Code = private("CTM-MEMBERS", "Cells in the cluster")
REGIONS_LISTED: Code = private("REGIONS-LISTED", "Detections listed as image regions")
DETECTION_CLASSES: dict[str, Code] = {"CTC": CTC, "CTM": CTM}

# ------------------------------------------------------------------------------------------ MRI

LESION: Code = codes.SCT.Lesion
LESION_CATEGORY: Code = codes.SCT.MorphologicallyAbnormalStructure
LESION_PRESENCE: Code = codes.SCT.Lesion
PRESENT: Code = codes.SCT.Present
ABSENT: Code = codes.SCT.Absent
NUMBER_OF_LESIONS: Code = codes.SCT.NumberOfLesions
MALIGNANT_LESIONS: Code = private("LESIONS-MALIG", "Number of lesions classified malignant")
TOTAL_LESION_VOLUME: Code = private("LESIONS-VOLUME", "Total lesion volume")
VOLUME: Code = codes.SCT.Volume
DIAMETER: Code = codes.SCT.Diameter
MAXIMUM: Code = codes.SCT.Maximum
MALIGNANCY_PROBABILITY: Code = codes.DCM.ProbabilityOfCancer
CLASSIFICATION: Code = codes.SCT.Classification
LESION_LABELS: dict[str, Code] = {"malignant": codes.SCT.Malignant, "benign": codes.SCT.Benign}

# pyradiomics feature (class, name) of the "original" image → IBSI concept in DICOM's dictionary (CID 7468)
_IBSI: dict[tuple[str, str], Code] = {
    ("firstorder", "Mean"): codes.SCT.Mean,
    ("firstorder", "Median"): codes.SCT.Median,
    ("firstorder", "Minimum"): codes.SCT.Minimum,
    ("firstorder", "Maximum"): codes.SCT.Maximum,
    ("firstorder", "Kurtosis"): codes.DCM.Kurtosis,
    ("firstorder", "Skewness"): codes.DCM.Skewness,
    ("firstorder", "InterquartileRange"): codes.DCM.InterquartileRangeOfPopulation,
    ("glcm", "Autocorrelation"): codes.DCM.AutocorrelationOfGLCM,
    ("glcm", "JointAverage"): codes.DCM.JointAverageOfGLCM,
    ("glcm", "ClusterProminence"): codes.DCM.ClusterProminenceOfGLCM,
    ("glcm", "ClusterShade"): codes.DCM.ClusterShadeOfGLCM,
    ("glcm", "ClusterTendency"): codes.DCM.ClusterTendencyOfGLCM,
    ("glcm", "Contrast"): codes.DCM.ContrastOfGLCM,
    ("glcm", "Correlation"): codes.DCM.CorrelationOfGLCM,
    ("glcm", "DifferenceAverage"): codes.DCM.DifferenceAverageOfGLCM,
    ("glcm", "DifferenceEntropy"): codes.DCM.DifferenceEntropyOfGLCM,
    ("glcm", "DifferenceVariance"): codes.DCM.DifferenceVarianceOfGLCM,
    ("glcm", "JointEnergy"): codes.DCM.AngularSecondMomentOfGLCM,
    ("glcm", "JointEntropy"): codes.DCM.JointEntropyOfGLCM,
    ("glcm", "Imc1"): codes.DCM.FirstMeasureOfInformationCorrelationOfGLCM,
    ("glcm", "Imc2"): codes.DCM.SecondMeasureOfInformationCorrelationOfGLCM,
    ("glcm", "Idm"): codes.DCM.InverseDifferenceMomentOfGLCM,
    ("glcm", "Idmn"): codes.DCM.InverseDifferenceMomentNormalizedOfGLCM,
    ("glcm", "Id"): codes.DCM.InverseDifferenceOfGLCM,
    ("glcm", "Idn"): codes.DCM.InverseDifferenceNormalizedOfGLCM,
    ("glcm", "InverseVariance"): codes.DCM.InverseVarianceOfGLCM,
    ("glcm", "MaximumProbability"): codes.DCM.JointMaximumOfGLCM,
    ("glcm", "SumEntropy"): codes.DCM.SumEntropyOfGLCM,
    ("glcm", "SumSquares"): codes.DCM.JointVarianceOfGLCM,
    ("glrlm", "ShortRunEmphasis"): codes.DCM.ShortRunsEmphasis,
    ("glrlm", "LongRunEmphasis"): codes.DCM.LongRunsEmphasis,
    ("glrlm", "GrayLevelNonUniformity"): codes.DCM.GrayLevelNonuniformityInRuns,
    ("glrlm", "GrayLevelNonUniformityNormalized"): codes.DCM.GrayLevelNonuniformityInRunsNormalized,
    ("glrlm", "RunLengthNonUniformity"): codes.DCM.RunLengthNonuniformity,
    ("glrlm", "RunLengthNonUniformityNormalized"): codes.DCM.RunLengthNonuniformityNormalized,
    ("glrlm", "GrayLevelVariance"): codes.DCM.GrayLevelVarianceInRuns,
    ("glrlm", "RunVariance"): codes.DCM.RunLengthVariance,
    ("glrlm", "RunEntropy"): codes.DCM.RunEntropy,
    ("glrlm", "LowGrayLevelRunEmphasis"): codes.DCM.LowGrayLevelRunEmphasis,
    ("glrlm", "HighGrayLevelRunEmphasis"): codes.DCM.HighGrayLevelRunEmphasis,
    ("glrlm", "ShortRunLowGrayLevelEmphasis"): codes.DCM.ShortRunLowGrayLevelEmphasis,
    ("glrlm", "ShortRunHighGrayLevelEmphasis"): codes.DCM.ShortRunHighGrayLevelEmphasis,
    ("glrlm", "LongRunLowGrayLevelEmphasis"): codes.DCM.LongRunLowGrayLevelEmphasis,
    ("glrlm", "LongRunHighGrayLevelEmphasis"): codes.DCM.LongRunHighGrayLevelEmphasis,
    ("glszm", "SmallAreaEmphasis"): codes.DCM.SmallZoneEmphasis,
    ("glszm", "LargeAreaEmphasis"): codes.DCM.LargeZoneEmphasis,
    ("glszm", "GrayLevelNonUniformity"): codes.DCM.GrayLevelNonuniformityOfZoneCounts,
    ("glszm", "GrayLevelNonUniformityNormalized"): codes.DCM.GrayLevelNonuniformityOfZoneCountsNormalized,
    ("glszm", "SizeZoneNonUniformity"): codes.DCM.ZoneSizeNonuniformity,
    ("glszm", "SizeZoneNonUniformityNormalized"): codes.DCM.ZoneSizeNonuniformityNormalized,
    ("glszm", "GrayLevelVariance"): codes.DCM.GrayLevelVarianceInZones,
    ("glszm", "ZoneVariance"): codes.DCM.ZoneSizeVariance,
    ("glszm", "ZoneEntropy"): codes.DCM.ZoneSizeEntropy,
    ("glszm", "LowGrayLevelZoneEmphasis"): codes.DCM.LowGrayLevelZoneEmphasis,
    ("glszm", "HighGrayLevelZoneEmphasis"): codes.DCM.HighGrayLevelZoneEmphasis,
    ("glszm", "SmallAreaLowGrayLevelEmphasis"): codes.DCM.SmallZoneLowGrayLevelEmphasis,
    ("glszm", "SmallAreaHighGrayLevelEmphasis"): codes.DCM.SmallZoneHighGrayLevelEmphasis,
    ("glszm", "LargeAreaLowGrayLevelEmphasis"): codes.DCM.LargeZoneLowGrayLevelEmphasis,
    ("glszm", "LargeAreaHighGrayLevelEmphasis"): codes.DCM.LargeZoneHighGrayLevelEmphasis,
}
_PYRADIOMICS_NAME = re.compile(r"^(?P<image>[A-Za-z0-9.-]+)_(?P<cls>[a-z0-9]+)_(?P<feature>[A-Za-z0-9]+)$")


def radiomics_feature(name: str) -> Code:
    """The concept of a pyradiomics feature (``original_glcm_Contrast``, ``wavelet-LLH_firstorder_Mean`` …):
    its IBSI concept when computed on the original image and one is defined, a private concept named by the
    pyradiomics feature name otherwise (filtered images have no standard concept of their own)."""
    match = _PYRADIOMICS_NAME.match(name)
    if match and match["image"] == "original":
        standard = _IBSI.get((match["cls"], match["feature"]))
        if standard is not None:
            return standard
    return private(f"RAD:{name}", name)


def radiomics_unit(name: str) -> Code:
    """Units of a radiomics feature: shape volumes and areas have physical units, the rest none."""
    match = _PYRADIOMICS_NAME.match(name)
    if match and match["cls"] == "shape":
        feature = match["feature"]
        if feature in ("MeshVolume", "VoxelVolume"):
            return UNIT_MM3
        if feature == "SurfaceArea":
            return UNIT_MM2
        if feature.endswith(("Diameter", "Diameter2D", "Diameter3D", "AxisLength")):
            return UNIT_MM
    return UNIT_NONE
