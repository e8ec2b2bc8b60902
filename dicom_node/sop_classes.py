"""The storage SOP classes and transfer syntaxes the SCP accepts (and the SCU proposes)."""

from __future__ import annotations

from pydicom import uid
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

# What we consume (images) and what we emit or pass through (SR, SEG, annotations, PDF).
STORAGE_SOP_CLASSES: tuple[str, ...] = (
    uid.MRImageStorage,
    uid.EnhancedMRImageStorage,
    uid.EnhancedMRColorImageStorage,
    uid.CTImageStorage,
    uid.EnhancedCTImageStorage,
    uid.VLWholeSlideMicroscopyImageStorage,
    uid.SecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
    uid.BasicTextSRStorage,
    uid.EnhancedSRStorage,
    uid.ComprehensiveSRStorage,
    uid.Comprehensive3DSRStorage,
    uid.SegmentationStorage,
    uid.MicroscopyBulkSimpleAnnotationsStorage,
    uid.EncapsulatedPDFStorage,
)

UNCOMPRESSED: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

TRANSFER_SYNTAXES: tuple[str, ...] = (
    *UNCOMPRESSED,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)
