"""The storage SOP classes and transfer syntaxes the SCP accepts (and the SCU proposes).

The SCP accepts every standard Storage SOP class by default (``scp.sop_classes: all``), so that a whole-study
push (images with their presentation states, key object selections, reports, waveforms…) succeeds: what no
routing rule wants stays stored, and its input is recorded as ignored with the reason. A list restricts it to
the classes named (pydicom keywords such as ``MRImageStorage``, or UIDs); ``all`` inside a list adds the
standard ones, so that private classes can be accepted beside them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from pydicom import uid
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
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
from pynetdicom import AllStoragePresentationContexts

# What we consume (images) and what we emit or pass through (SR, SEG, annotations, PDF).
OWN_STORAGE_SOP_CLASSES: tuple[str, ...] = (
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

ALL: Final = "all"

# Every standard Storage SOP class (PS3.4 Annex B), as pynetdicom lists them, ours first.
STANDARD_STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(dict.fromkeys((
    *OWN_STORAGE_SOP_CLASSES, *(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts),
)))

# What the SCP accepts unless ``scp.sop_classes`` says otherwise.
STORAGE_SOP_CLASSES: tuple[str, ...] = STANDARD_STORAGE_SOP_CLASSES

_BY_KEYWORD = {UID(sop_class).keyword: sop_class for sop_class in STANDARD_STORAGE_SOP_CLASSES}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def resolve_sop_classes(setting: str | Sequence[str]) -> tuple[str, ...]:
    """The SOP Class UIDs ``setting`` names: ``all`` (every standard Storage SOP class), or a list of pydicom
    keywords of storage classes and UIDs, where ``all`` adds the standard ones. ValueError for anything else."""
    names = [setting] if isinstance(setting, str) else list(setting)
    if not names:
        raise ValueError("no SOP class to accept: say 'all' or name at least one")
    resolved: list[str] = []
    for name in (n.strip() for n in names):
        if name == ALL:
            resolved.extend(STANDARD_STORAGE_SOP_CLASSES)
        elif name in _BY_KEYWORD:
            resolved.append(_BY_KEYWORD[name])
        elif _UID.match(name) and len(name) <= 64:
            resolved.append(name)
        else:
            raise ValueError(f"{name!r} is neither 'all', a storage SOP class keyword (e.g. MRImageStorage) nor a UID")
    return tuple(dict.fromkeys(resolved))

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
