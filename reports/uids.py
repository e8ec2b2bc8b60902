"""Deterministic output UIDs: the same input, content and pipeline version always give the same UIDs.

Every UID a result carries (study of a context-only slide, series, SOP instance, tracking and annotation group
UIDs) is ``2.25.<integer of a name-based UUID>`` (DICOM PS3.5 B.2, ISO/IEC 9834-8) of a *basis* that names
the input (study/series UIDs, or the slide key for slides from scanner folders), the input's content
fingerprint and the pipeline version, plus the object kind. A retry or a resend therefore replaces what the
PACS holds instead of adding a duplicate, while a result with new content or a new pipeline version gets new
UIDs (and its SR names the one it supersedes).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# A fixed namespace for OncoAgent's name-based UUIDs (uuid5 of the DNS-like name below); never change it:
# every UID ever sent to a PACS depends on it.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "uids.oncoagent.invalid")
MAX_UID_CHARS = 64


def derived_uid(*parts: str) -> str:
    """``2.25.<uuid5 integer>`` of ``parts`` joined by ``/`` (at most 44 characters)."""
    uid = f"2.25.{uuid.uuid5(NAMESPACE, '/'.join(parts)).int}"
    if len(uid) > MAX_UID_CHARS:  # pragma: no cover - a 128-bit integer has at most 39 digits
        raise ValueError(f"derived UID longer than {MAX_UID_CHARS} characters")
    return uid


@dataclass(frozen=True)
class OutputUids:
    """The UIDs of one result's objects, all derived from ``basis``."""

    basis: str

    @classmethod
    def for_result(
        cls,
        *,
        pipeline: str,
        pipeline_version: str,
        input_key: str,
        study_uid: str | None,
        series_uid: str | None,
        fingerprint: str,
    ) -> OutputUids:
        """The input is named by its UIDs when it has them (a DICOM series), by its key otherwise (a slide
        file); the fingerprint changes when the content does (a series that gained an instance)."""
        source = f"dicom:{study_uid or ''}:{series_uid}" if series_uid else f"key:{input_key}"
        return cls("|".join((pipeline, pipeline_version, source, fingerprint)))

    def series(self, kind: str) -> str:
        """Series Instance UID of the output object ``kind`` (``sr``, ``seg``, ``ann``, ``pdf`` …)."""
        return derived_uid(self.basis, "series", kind)

    def instance(self, kind: str) -> str:
        """SOP Instance UID of the output object ``kind``."""
        return derived_uid(self.basis, "instance", kind)

    def item(self, kind: str, index: int) -> str:
        """A UID for the ``index``-th item of ``kind`` (tracking UIDs of findings, annotation groups)."""
        return derived_uid(self.basis, "item", kind, str(index))


def context_study_uid(accession_number: str, patient_id: str) -> str:
    """Study Instance UID for a slide whose context (accession, patient) came from a scanner folder mapping
    and named no study UID: every slide of one accession lands in the same study."""
    return derived_uid("study", patient_id, accession_number)


def device_uid(name: str, version: str, sha256: str) -> str:
    """Device Observer UID of an algorithm: one per model name, version and weights."""
    return derived_uid("device", name, version, sha256)


def reviewed_uids(ai_sr_uid: str, version: int) -> OutputUids:
    """The UIDs of the objects of a reviewer's sign-off ``version`` of the result whose AI SR is ``ai_sr_uid``
    (a UID that names the input, its content and the pipeline version already): the same sign-off always gets
    the same UIDs, another version or another result other ones."""
    return OutputUids(f"review|{ai_sr_uid}|v{version}")


def reviewed_series_uid(ai_sr_uid: str) -> str:
    """The one series that holds every signed version of the result whose AI SR is ``ai_sr_uid``."""
    return derived_uid(f"review|{ai_sr_uid}", "series", "verified-sr")
