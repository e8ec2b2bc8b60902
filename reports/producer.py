"""Who made a result: the pipeline, its version, its models, and the UIDs of what it writes.

Every object we write names its maker the same way: the pipeline as the device (manufacturer "OncoAgent",
model name = pipeline name, software version = pipeline version) and each model by name, version and weights
sha256, in the form each IOD asks for (TID 4019 Algorithm Identification in SR, the Algorithm Identification
Sequence in SEG and bulk annotations).
"""

from __future__ import annotations

from dataclasses import dataclass

from highdicom import AlgorithmIdentificationSequence
from highdicom.sr import AlgorithmIdentification

from reports.codes import ALGORITHM_FAMILY
from reports.findings import Algorithm
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
