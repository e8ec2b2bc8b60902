"""Who made a result: the pipeline, its version, its models, and the UIDs of what it writes.

Every object we write names its maker the same way: the pipeline as the device (manufacturer "OncoAgent",
model name = pipeline name, software version = pipeline version) and each model by name, version and weights
sha256, in the form each IOD asks for (TID 4019 Algorithm Identification in SR, the Algorithm Identification
Sequence in SEG and bulk annotations).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from highdicom import AlgorithmIdentificationSequence
from highdicom.sr import AlgorithmIdentification

from reports.codes import ALGORITHM_FAMILY
from reports.findings import Algorithm, algorithms
from reports.uids import OutputUids, device_uid

MANUFACTURER = "OncoAgent"


@dataclass(frozen=True)
class Producer:
    pipeline: str
    version: str
    algorithms: tuple[Algorithm, ...]
    uids: OutputUids

    @property
    def device_uid(self) -> str:
        return device_uid(self.pipeline, self.version, "+".join(a.sha256 for a in self.algorithms))

    @property
    def device_name(self) -> str:
        return f"{MANUFACTURER} {self.pipeline}"

    @property
    def model_names(self) -> str:
        return "; ".join(a.label for a in self.algorithms) or self.pipeline

    @property
    def serial_number(self) -> str:
        """Device serial number (Type 1 in the equipment modules): the first model's weights hash prefix,
        so that objects from different weights are told apart."""
        return next((a.sha256[:16] for a in self.algorithms if a.sha256), self.version) or "none"

    @classmethod
    def of_result(cls, doc: Mapping[str, Any], input_key: str, study_uid: str | None, series_uid: str | None,
                  fingerprint: str) -> Producer:
        """The maker of the result ``doc`` (result.json's content) of the input named by the other arguments."""
        pipeline, version = str(doc.get("pipeline", "")), str(doc.get("pipeline_version", ""))
        return cls(pipeline, version, algorithms(doc), OutputUids.for_result(
            pipeline=pipeline, pipeline_version=version, input_key=input_key, study_uid=study_uid,
            series_uid=series_uid, fingerprint=fingerprint))

    def algorithm(self, position: int) -> Algorithm | None:
        """The model at ``position`` of ``doc["models"]``, or the last one when there are fewer."""
        if not self.algorithms:
            return None
        return self.algorithms[min(position, len(self.algorithms) - 1)]

    def pipeline_identification(self) -> AlgorithmIdentification:
        """TID 4019 for the pipeline as a whole (the measurement group's algorithm)."""
        return AlgorithmIdentification(
            name=self.pipeline,
            version=self.version,
            parameters=[f"model {a.label} weights sha256 {a.sha256}" for a in self.algorithms] or None,
            manufacturer=MANUFACTURER,
        )


def sr_identification(algorithm: Algorithm) -> AlgorithmIdentification:
    """TID 4019 for one model (a measurement's algorithm)."""
    return AlgorithmIdentification(
        name=algorithm.name or "unnamed",
        version=algorithm.version or "unknown",
        parameters=[f"weights sha256 {algorithm.sha256}"] if algorithm.sha256 else None,
        manufacturer=MANUFACTURER,
    )


def sequence_identification(
    algorithm: Algorithm | None, pipeline: str, version: str
) -> AlgorithmIdentificationSequence:
    """Algorithm Identification Sequence (SEG segments, annotation groups) for one model."""
    if algorithm is None:
        return AlgorithmIdentificationSequence(name=pipeline, family=ALGORITHM_FAMILY, version=version,
                                               source=MANUFACTURER)
    return AlgorithmIdentificationSequence(
        name=algorithm.name or pipeline,
        family=ALGORITHM_FAMILY,
        version=algorithm.version or version,
        source=MANUFACTURER,
        parameters={"weights_sha256": algorithm.sha256, "pipeline": f"{pipeline} {version}"},
    )
