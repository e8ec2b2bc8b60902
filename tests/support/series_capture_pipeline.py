"""A plugin pipeline for DICOM series that writes DICOM results fast, for daemon tests whose findings must reach
PACS many times over (the MRI pipeline takes seconds per series on a CPU).

Configure ``plugins: [tests.support.series_capture_pipeline]`` to register ``test-series-capture``. It reads
every instance's header, computes for ``seconds`` (its option; a wait standing in for a model) and writes
``objects`` Secondary Capture objects at the top of its result folder, which the daemon sends to the
destinations. Their UIDs derive from the series and its fingerprint, so a rerun of a job writes the same objects.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import pydicom
from pydantic import BaseModel, ConfigDict, Field
from pydicom.dataset import Dataset
from pydicom.uid import UID

from pipelines import registry
from pipelines.base import PipelineInput, PipelineResult
from pipelines.errors import InputError
from pipelines.synthetic.mri_series import synthetic_uid
from tests.support.scripted_pipelines import secondary_capture


class SeriesCaptureOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(default=0.5, ge=0, description="time spent as if computing, per job")
    objects: int = Field(default=2, ge=1, description="Secondary Capture objects written per job")


class SeriesCapturePipeline:
    name: ClassVar[str] = "test-series-capture"
    version: ClassVar[str] = "1.0"
    Options: ClassVar[type[SeriesCaptureOptions]] = SeriesCaptureOptions

    def __init__(self, options: SeriesCaptureOptions | None = None) -> None:
        self.options = options or SeriesCaptureOptions()

    def run(self, inp: PipelineInput, out_dir: Path) -> PipelineResult:
        if inp.kind != "dicom-series" or not inp.paths:
            raise InputError(f"{self.name} reads DICOM series, not {inp.kind} inputs")
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in inp.paths]
        time.sleep(self.options.seconds)  # stands in for a model's computation
        files = []
        for index in range(self.options.objects):
            name = f"capture-{index + 1}.dcm"
            capture(headers[0], inp.fingerprint, index).save_as(out_dir / name, enforce_file_format=True)
            files.append(name)
        return PipelineResult(summary={"instances": len(headers)}, files=tuple(files))


def capture_uid(series_uid: str, fingerprint: str, index: int) -> str:
    """The SOP Instance UID of the ``index``-th object written for a series with this fingerprint."""
    return synthetic_uid("capture", series_uid, fingerprint, index)


def capture(source: Dataset, fingerprint: str, index: int) -> Dataset:
    """A small Secondary Capture in the source's study, for the same patient."""
    ds = secondary_capture(f"{source.SeriesInstanceUID}/{fingerprint}/{index}")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(
        capture_uid(str(source.SeriesInstanceUID), fingerprint, index))
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                    "StudyID", "ReferringPhysicianName"):
        setattr(ds, keyword, source.get(keyword, ""))
    ds.SeriesInstanceUID = synthetic_uid("capture-series", source.SeriesInstanceUID, fingerprint)
    ds.SeriesNumber = 900
    ds.InstanceNumber = index + 1
    return ds


registry.register(SeriesCapturePipeline.name, SeriesCapturePipeline)
