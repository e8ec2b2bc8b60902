"""DIMSE command sets (PS3.7 chapter 9 and annex E) as the acceptor needs them: read a request, write a response.

Command sets are always Implicit VR Little Endian with only group 0000 elements, so they are read and written
here element by element, without a general dataset parser: what a C-STORE costs is the network and the disk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
RESPONSE_BIT = 0x8000
NO_DATASET = 0x0101

_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_MESSAGE_ID_RESPONDED = 0x0120
_DATASET_TYPE = 0x0800
_STATUS = 0x0900
_AFFECTED_SOP_INSTANCE = 0x1000
_US_ELEMENTS = {_COMMAND_FIELD, _MESSAGE_ID, _MESSAGE_ID_RESPONDED, 0x0700, _DATASET_TYPE, _STATUS, 0x1031}


class CommandError(ValueError):
    """A command set that cannot be read."""


@dataclass(frozen=True)
class Command:
    command_field: int
    message_id: int
    has_dataset: bool
    affected_sop_class: str
    affected_sop_instance: str


def read_command(data: bytes) -> Command:
    """Parse a request's command set; CommandError when it is not one."""
    values: dict[int, int | str] = {}
    offset, end = 0, len(data)
    while offset < end:
        if offset + 8 > end:
            raise CommandError("command set ends inside an element header")
        group, element, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            raise CommandError(f"element ({group:04X},{element:04X}) does not belong in a command set")
        value = data[offset : offset + length]
        offset += length
        if element in _US_ELEMENTS and length == 2:
            values[element] = struct.unpack("<H", value)[0]
        elif element in (_AFFECTED_SOP_CLASS, _AFFECTED_SOP_INSTANCE):
            try:  # a UID is ASCII; anything else could not be echoed in the response either
                values[element] = value.rstrip(b"\0 ").decode("ascii")
            except UnicodeDecodeError as exc:
                raise CommandError(f"element (0000,{element:04X}) is not an ASCII UID") from exc
    if _COMMAND_FIELD not in values or _MESSAGE_ID not in values:
        raise CommandError("command set without Command Field or Message ID")
    return Command(
        command_field=int(values[_COMMAND_FIELD]),
        message_id=int(values[_MESSAGE_ID]),
        has_dataset=int(values.get(_DATASET_TYPE, NO_DATASET)) != NO_DATASET,
        affected_sop_class=str(values.get(_AFFECTED_SOP_CLASS, "")),
        affected_sop_instance=str(values.get(_AFFECTED_SOP_INSTANCE, "")),
    )


def _uid(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _us(element: int, value: int) -> bytes:
    return struct.pack("<HHIH", 0x0000, element, 2, value)


def response(request: Command, status: int) -> bytes:
    """The response command set to ``request`` (no dataset) with ``status``."""
    body = [_uid(_AFFECTED_SOP_CLASS, request.affected_sop_class) if request.affected_sop_class else b"",
            _us(_COMMAND_FIELD, request.command_field | RESPONSE_BIT),
            _us(_MESSAGE_ID_RESPONDED, request.message_id),
            _us(_DATASET_TYPE, NO_DATASET),
            _us(_STATUS, status)]
    if request.affected_sop_instance:
        body.append(_uid(_AFFECTED_SOP_INSTANCE, request.affected_sop_instance))
    payload = b"".join(body)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(payload)) + payload
