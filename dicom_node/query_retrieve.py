"""Query/retrieve SCU: find studies on a PACS (C-FIND) and retrieve them (C-MOVE to our SCP, or C-GET).

For the nightly reprocessing batches: a configured destination (:class:`DestinationConfig`) is queried at study
level in the Study Root model by a StudyDate range, the modalities and the SOP classes in the study; each
matching study is retrieved with C-MOVE to OncoAgent's own SCP (the PACS must know that AE title and where it
listens) or, where configured, with C-GET on the same association into a folder (each file fsynced under its
final name).

* One association per call; its calling AE title is the destination's, else the one handed in (the SCP's).
* Every wait on the PACS (TCP connection, association, each response, idle network) is bounded by
  ``timeout_s``. For a retrieve that bounds the wait for each response: a PACS that sends no pending responses
  must retrieve the whole study within it.
* Failures raise :class:`QueryRetrieveError` with the DIMSE status where the PACS answered one (0xA801 move
  destination unknown, 0xA7xx out of resources, 0xA9xx, 0xCxxx…); a warning (0xB000: some sub-operations
  failed) comes back as a :class:`RetrieveOutcome` that counts them.
* Several modalities are queried with one C-FIND each (many PACS do not match a multi-valued ModalitiesInStudy)
  and merged by StudyInstanceUID; SOP classes are matched here, on the SOPClassesInStudy the answers return.
  Answers that contradict the query (none of the modalities or SOP classes, a date outside the range) and
  answers without a usable StudyInstanceUID are dropped and counted.
* No patient attribute is asked for or logged: UIDs and counts only.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.status import (
    QR_FIND_SERVICE_CLASS_STATUS,
    QR_GET_SERVICE_CLASS_STATUS,
    QR_MOVE_SERVICE_CLASS_STATUS,
    STATUS_WARNING,
    code_to_category,
)

from dicom_node.errors import InvalidUIDError, QueryRetrieveError
from dicom_node.settings import DestinationConfig, ScpConfig
from dicom_node.sop_classes import OWN_STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from dicom_node.storage import instance_path, validate_uid
from dicom_node.transport import associate
from pipelines.durable import write_bytes_durably

log = logging.getLogger(__name__)

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE
GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
SUCCESS = 0x0000
PENDING = frozenset({0xFF00, 0xFF01})
MAX_STORAGE_CONTEXTS = 127  # an association has at most 128 presentation contexts; C-GET takes one
DEFAULT_CALLING_AE_TITLE = ScpConfig().ae_title
SUB_OPERATIONS = ("NumberOfCompletedSuboperations", "NumberOfFailedSuboperations", "NumberOfWarningSuboperations")

StatusTable = dict[int, tuple[str, str]]


@dataclass(frozen=True, slots=True)
class StudyMatch:
    """A study the PACS matched: its UID, and what the PACS said of it where it said it."""

    study_instance_uid: str
    study_date: date | None = None
    modalities: tuple[str, ...] = ()  # ModalitiesInStudy
    sop_classes: tuple[str, ...] = ()  # SOPClassesInStudy
    instances: int | None = None  # NumberOfStudyRelatedInstances


@dataclass(frozen=True, slots=True)
class RetrieveOutcome:
    """How a retrieve ended: the final status (0x0000, or 0xB000 when some sub-operations failed) and the
    sub-operation counts of the final response (of the last pending one where the final gives none)."""

    study_instance_uid: str
    status: int
    completed: int
    failed: int
    warning: int
    failed_instances: tuple[str, ...] = ()  # the Failed SOP Instance UID List, where the PACS gives it
    stored: tuple[Path, ...] = ()  # C-GET: the files written (fsynced, under their final names)


# ----------------------------------------------------------------------------------------------- C-FIND


def study_date_range(since: date | None, until: date | None) -> str:
    """The StudyDate matching key: ``YYYYMMDD-YYYYMMDD``, open at either end, empty (any date) for neither."""
    if since is not None and until is not None and since > until:
        raise ValueError(f"the date range is empty: {since} is after {until}")
    if since is None and until is None:
        return ""
    return f"{since.strftime('%Y%m%d') if since else ''}-{until.strftime('%Y%m%d') if until else ''}"


def find_studies(dest: DestinationConfig, *, since: date | None, until: date | None,
                 modalities: Sequence[str] = (), sop_classes: Sequence[str] = (), timeout_s: float,
                 calling_ae_title: str | None = None) -> list[StudyMatch]:
    """The studies on ``dest`` dated ``since`` to ``until`` (inclusive; None: open) with any of ``modalities``
    and any of ``sop_classes`` (empty: any), oldest first. One C-FIND per modality on one association, merged
    by StudyInstanceUID. SOP classes are matched here, on the SOPClassesInStudy each answer returns (PACS that
    have it seldom match on it: Orthanc 1.10 answers nothing when it is given); a study whose answer does not
    say is kept."""
    dates = study_date_range(since, until)
    wanted = _Wanted(since, until, frozenset(sop_classes))
    modality_keys = tuple(dict.fromkeys(m.strip().upper() for m in modalities if m.strip()))
    found: dict[str, StudyMatch] = {}
    dropped = 0
    with _association(dest, FIND, timeout_s, calling_ae_title) as assoc:
        for modality in modality_keys or (None,):
            for match in _find(assoc, dest, dates, modality, timeout_s):
                if match is None or not wanted.admits(match, modality):
                    dropped += 1
                    continue
                found[match.study_instance_uid] = _merged(found.get(match.study_instance_uid), match)
    log.info("C-FIND on %s: %d studies (StudyDate %r, modalities %s, %d SOP classes); %d answers dropped",
             dest.name, len(found), dates, ",".join(modality_keys) or "any", len(wanted.sop_classes), dropped)
    return sorted(found.values(), key=lambda m: (m.study_date or date.min, m.study_instance_uid))


def _find(assoc: Association, dest: DestinationConfig, dates: str, modality: str | None,
          timeout_s: float) -> Iterator[StudyMatch | None]:
    """The matches of one C-FIND (None for an answer without a usable StudyInstanceUID)."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.StudyDate = dates
    query.ModalitiesInStudy = modality or ""
    query.SOPClassesInStudy = ""
    query.NumberOfStudyRelatedInstances = ""
    for response, identifier in assoc.send_c_find(query, FIND):
        status = _status(response)
        if status in PENDING:
            yield _study_match(identifier)
        elif status == SUCCESS:
            return
        else:
            raise _failure(dest, "C-FIND", response, status, timeout_s, QR_FIND_SERVICE_CLASS_STATUS)
    raise _failure(dest, "C-FIND", None, None, timeout_s, QR_FIND_SERVICE_CLASS_STATUS)


def _study_match(identifier: Dataset | None) -> StudyMatch | None:
    if identifier is None:
        return None
    try:
        uid = validate_uid(_value(identifier, "StudyInstanceUID"), "StudyInstanceUID")
    except InvalidUIDError:
        return None
    return StudyMatch(uid, _date(_value(identifier, "StudyDate")), _strings(_value(identifier, "ModalitiesInStudy")),
                      _strings(_value(identifier, "SOPClassesInStudy")),
                      _count(_value(identifier, "NumberOfStudyRelatedInstances")))


@dataclass(frozen=True, slots=True)
class _Wanted:
    since: date | None
    until: date | None
    sop_classes: frozenset[str]

    def admits(self, match: StudyMatch, modality: str | None) -> bool:
        """False where the answer says the study is not wanted: another modality or no wanted SOP class (the
        PACS ignored or does not match that key), a date outside the range."""
        if modality is not None and match.modalities and modality not in match.modalities:
            return False
        if self.sop_classes and match.sop_classes and self.sop_classes.isdisjoint(match.sop_classes):
            return False
        day = match.study_date
        return day is None or ((self.since is None or day >= self.since) and (self.until is None or day <= self.until))


def _merged(known: StudyMatch | None, match: StudyMatch) -> StudyMatch:
    if known is None:
        return match
    return StudyMatch(
        known.study_instance_uid, known.study_date or match.study_date,
        tuple(sorted({*known.modalities, *match.modalities})),
        tuple(sorted({*known.sop_classes, *match.sop_classes})),
        known.instances if known.instances is not None else match.instances,
    )


# ----------------------------------------------------------------------------------------------- C-MOVE, C-GET


def move_study(dest: DestinationConfig, study_uid: str, move_destination_ae: str, *, timeout_s: float,
               calling_ae_title: str | None = None) -> RetrieveOutcome:
    """Ask ``dest`` to send the study to the AE titled ``move_destination_ae`` (our SCP: the PACS must know
    where it listens); return once the PACS says it is done."""
    validate_uid(study_uid, "StudyInstanceUID")
    if not 0 < len(move_destination_ae.strip()) <= 16:
        raise ValueError(f"{move_destination_ae!r} is not an AE title")
    with _association(dest, MOVE, timeout_s, calling_ae_title) as assoc:
        responses = assoc.send_c_move(_study_identifier(study_uid), move_destination_ae, MOVE)
        outcome = _retrieved(responses, dest, "C-MOVE", study_uid, timeout_s, QR_MOVE_SERVICE_CLASS_STATUS)
    log.info("C-MOVE of study %s from %s to %s: status 0x%04X, %d completed, %d failed, %d warnings", study_uid,
             dest.name, move_destination_ae, outcome.status, outcome.completed, outcome.failed, outcome.warning)
    return outcome


def get_study(dest: DestinationConfig, study_uid: str, store_into: Path, *, timeout_s: float,
              sop_classes: Sequence[str] = OWN_STORAGE_SOP_CLASSES,
              calling_ae_title: str | None = None) -> RetrieveOutcome:
    """Retrieve the study with C-GET: the PACS sends its instances (of ``sop_classes``, at most 127) on the same
    association, each written to ``store_into/<study>/<series>/<instance>.dcm`` and fsynced before it is
    acknowledged. Files received before a failure stay there."""
    validate_uid(study_uid, "StudyInstanceUID")
    classes = tuple(dict.fromkeys(sop_classes))
    if not 0 < len(classes) <= MAX_STORAGE_CONTEXTS:
        raise ValueError(f"C-GET takes 1 to {MAX_STORAGE_CONTEXTS} storage SOP classes, not {len(classes)}")
    receiver = _Receiver(store_into)
    with _association(dest, GET, timeout_s, calling_ae_title, storage=classes,
                      handlers=[(evt.EVT_C_STORE, receiver.store)]) as assoc:
        responses = assoc.send_c_get(_study_identifier(study_uid), GET)
        outcome = _retrieved(responses, dest, "C-GET", study_uid, timeout_s, QR_GET_SERVICE_CLASS_STATUS)
    log.info("C-GET of study %s from %s: status 0x%04X, %d completed, %d failed, %d warnings; %d files written",
             study_uid, dest.name, outcome.status, outcome.completed, outcome.failed, outcome.warning,
             len(receiver.stored))
    return dataclasses.replace(outcome, stored=tuple(receiver.stored))


class _Receiver:
    """The C-STORE sub-operations of a C-GET: each instance written durably before its success answer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stored: list[Path] = []

    def store(self, event: Event) -> int:
        try:
            sop_uid = validate_uid(getattr(event.request, "AffectedSOPInstanceUID", None), "AffectedSOPInstanceUID")
            header = event.dataset
            target = instance_path(self.root, _value(header, "StudyInstanceUID"),
                                   _value(header, "SeriesInstanceUID"), sop_uid)
            data = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # whatever a peer's dataset makes pydicom raise: we cannot keep it
            log.warning("C-GET: refused an instance that cannot be named or read: %s", exc, exc_info=True)
            return 0xC210
        try:
            write_bytes_durably(target, data)
        except OSError as exc:
            log.error("C-GET: cannot write %s: %s", sop_uid, exc)
            return 0xA700
        self.stored.append(target)
        return SUCCESS


def _study_identifier(study_uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    return identifier


def _retrieved(responses: Iterable[tuple[Dataset, Dataset | None]], dest: DestinationConfig, operation: str,
               study_uid: str, timeout_s: float, table: StatusTable) -> RetrieveOutcome:
    """The outcome of a C-MOVE or C-GET from its responses; QueryRetrieveError for a failure or no answer."""
    counts = (0, 0, 0)
    for response, identifier in responses:
        status = _status(response)
        if status is None:
            break
        completed, failed, warning = (_count(_value(response, keyword)) for keyword in SUB_OPERATIONS)
        counts = (counts[0] if completed is None else completed, counts[1] if failed is None else failed,
                  counts[2] if warning is None else warning)
        if status in PENDING:
            continue
        failed_uids = _strings(_value(identifier, "FailedSOPInstanceUIDList")) if identifier is not None else ()
        outcome = RetrieveOutcome(study_uid, status, *counts, failed_instances=failed_uids)
        if status == SUCCESS or code_to_category(status) == STATUS_WARNING:
            return outcome
        raise _failure(dest, f"{operation} of study {study_uid}", response, status, timeout_s, table,
                       f" after {counts[0]} completed and {counts[1]} failed sub-operations")
    raise _failure(dest, f"{operation} of study {study_uid}", None, None, timeout_s, table)


# ----------------------------------------------------------------------------------------------- shared


@contextmanager
def _association(dest: DestinationConfig, model: str, timeout_s: float, calling_ae_title: str | None, *,
                 storage: Sequence[str] = (), handlers: Sequence[EventHandlerType] = ()) -> Iterator[Association]:
    """An established association with ``dest`` that accepted ``model`` (and proposed ``storage`` classes with
    us in the SCP role, for C-GET); released on leaving. QueryRetrieveError where there is none."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, not {timeout_s}")
    ae = AE(ae_title=dest.calling_ae_title or calling_ae_title or DEFAULT_CALLING_AE_TITLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    ae.add_requested_context(model)
    for sop_class in storage:
        ae.add_requested_context(sop_class, list(TRANSFER_SYNTAXES))
    roles = [build_role(sop_class, scp_role=True) for sop_class in storage]
    connected: list[bool] = []
    assoc = associate(ae, dest, roles=roles,
                      handlers=[*handlers, (evt.EVT_CONN_OPEN, lambda _: connected.append(True))])
    where = f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port})"
    refused = f"{where} does not support {UID(model).name}"
    if not assoc.is_established:
        if assoc.is_rejected:
            raise QueryRetrieveError(f"{where} rejected the association (calling AE title {ae.ae_title})")
        if any(str(cx.abstract_syntax) == model for cx in assoc.rejected_contexts):
            raise QueryRetrieveError(refused)
        if not connected:
            raise QueryRetrieveError(f"{where} cannot be reached (refused, or no connection within {timeout_s:g} s)")
        raise QueryRetrieveError(f"{where} aborted the association or did not answer within {timeout_s:g} s")
    try:
        if not any(str(cx.abstract_syntax) == model for cx in assoc.accepted_contexts):
            raise QueryRetrieveError(refused)
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _failure(dest: DestinationConfig, operation: str, response: Dataset | None, status: int | None,
             timeout_s: float, table: StatusTable, progress: str = "") -> QueryRetrieveError:
    if status is None:
        return QueryRetrieveError(f"{dest.name}: {operation} got no answer within {timeout_s:g} s "
                                  "(or the association was aborted)")
    meaning = table.get(status, ("", "unknown status"))[1]
    comment = _value(response, "ErrorComment") if response is not None else None
    detail = f"; {str(comment)[:200]}" if comment else ""
    return QueryRetrieveError(
        f"{dest.name}: {operation} failed with status 0x{status:04X} ({meaning}{detail}){progress}", status)


def _status(response: Dataset | None) -> int | None:
    value = _value(response, "Status") if response is not None else None
    return int(value) if isinstance(value, int) else None


def _value(ds: Dataset, keyword: str) -> Any:
    """An attribute's value, None where it is missing or cannot be read (a peer's odd encoding)."""
    try:
        return ds.get(keyword)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, NotImplementedError):  # malformed
        return None


def _date(value: Any) -> date | None:
    try:
        return datetime.strptime(str(value).strip(), "%Y%m%d").date() if value else None
    except ValueError:
        return None


def _count(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _strings(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) or not isinstance(value, Iterable) else list(value)
    return tuple(s for s in (str(v).strip() for v in items if v is not None) if s)
