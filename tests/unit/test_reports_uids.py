"""Deterministic output UIDs (reports.uids)."""

from __future__ import annotations

import re
import uuid

from reports.uids import NAMESPACE, OutputUids, context_study_uid, derived_uid, device_uid

UID = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def _uids(**changes: str | None) -> OutputUids:
    args: dict[str, str | None] = {
        "pipeline": "mri-tumour", "pipeline_version": "1.0.0", "input_key": "1.2.3.4",
        "study_uid": "1.2.3", "series_uid": "1.2.3.4", "fingerprint": "abc",
    }
    args.update(changes)
    return OutputUids.for_result(**args)  # type: ignore[arg-type]


class TestDerivedUid:
    def test_is_the_uuid5_integer_under_2_25(self) -> None:
        expected = f"2.25.{uuid.uuid5(NAMESPACE, 'a/b').int}"
        assert derived_uid("a", "b") == expected
        assert UID.match(expected) and len(expected) <= 64

    def test_same_parts_same_uid_other_parts_other_uid(self) -> None:
        assert derived_uid("x", "y") == derived_uid("x", "y")
        assert derived_uid("x", "y") != derived_uid("x", "z")

    def test_namespace_is_fixed(self) -> None:
        # every UID ever sent depends on it: a change here is a change of every output UID
        assert str(NAMESPACE) == str(uuid.uuid5(uuid.NAMESPACE_DNS, "uids.oncoagent.invalid"))


class TestOutputUids:
    def test_basis_names_pipeline_version_input_and_content(self) -> None:
        assert _uids().basis == "mri-tumour|1.0.0|dicom:1.2.3:1.2.3.4|abc"
        assert _uids(series_uid=None, study_uid=None, input_key="/scans/a.svs").basis == (
            "mri-tumour|1.0.0|key:/scans/a.svs|abc"
        )

    def test_a_retry_gets_the_same_uids(self) -> None:
        first, again = _uids(), _uids()
        for kind in ("sr", "seg", "ann", "pdf"):
            assert first.series(kind) == again.series(kind)
            assert first.instance(kind) == again.instance(kind)
        assert first.item("lesion", 1) == again.item("lesion", 1)

    def test_new_content_or_version_gets_new_uids(self) -> None:
        base = _uids()
        assert _uids(fingerprint="def").instance("sr") != base.instance("sr")
        assert _uids(pipeline_version="1.0.1").instance("sr") != base.instance("sr")
        assert _uids(series_uid="1.2.3.5").instance("sr") != base.instance("sr")

    def test_kinds_and_roles_never_collide(self) -> None:
        uids = _uids()
        values = [uids.series("sr"), uids.instance("sr"), uids.series("seg"), uids.instance("seg"),
                  uids.instance("sr-comprehensive"), uids.item("lesion", 1), uids.item("lesion", 2)]
        assert len(set(values)) == len(values)
        assert all(UID.match(v) for v in values)


class TestContextStudyUid:
    def test_one_study_per_patient_and_accession(self) -> None:
        assert context_study_uid("ACC-1", "P1") == context_study_uid("ACC-1", "P1")
        assert context_study_uid("ACC-1", "P1") != context_study_uid("ACC-2", "P1")
        assert context_study_uid("ACC-1", "P1") == derived_uid("study", "P1", "ACC-1")


class TestDeviceUid:
    def test_depends_on_the_weights(self) -> None:
        assert device_uid("m", "1", "a" * 64) == derived_uid("device", "m", "1", "a" * 64)
        assert device_uid("m", "1", "a" * 64) != device_uid("m", "1", "b" * 64)
