"""Hypothesis strategies for DIMSE command sets (PS3.7 annex E): well-formed ones with the values they encode,
elements of any kind, and byte-level mutations of either."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hypothesis import strategies as st

COMMAND_FIELDS = (0x0001, 0x0010, 0x0020, 0x0021, 0x0030, 0x0FFF, 0x0100, 0x0110, 0x0120, 0x0130, 0x0140, 0x0150)
UID_ELEMENTS = (0x0002, 0x1000)
US_ELEMENTS = (0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900, 0x1031)
OTHER_ELEMENTS = (0x0000, 0x0003, 0x0600, 0x0901, 0x0902, 0x1001, 0x1005, 0x1008, 0x1020, 0x1030)


def element(tag: int, value: bytes, group: int = 0x0000) -> bytes:
    """One Implicit VR Little Endian element."""
    return struct.pack("<HHI", group, tag, len(value)) + value


@dataclass(frozen=True)
class CommandSet:
    """An encoded command set and what :func:`dicom_node.dimse.read_command` must read from it."""

    encoded: bytes
    command_field: int
    message_id: int
    has_dataset: bool
    affected_sop_class: str
    affected_sop_instance: str


uids = st.from_regex(r"\A[1-9][0-9]{0,8}(\.(0|[1-9][0-9]{0,8})){0,7}\Z")
us = st.integers(0, 0xFFFF)


@st.composite
def command_sets(draw: st.DrawFn) -> CommandSet:
    """A well-formed request: Command Field, Message ID, maybe UIDs, Data Set Type, others, in any order."""
    field = draw(st.sampled_from(COMMAND_FIELDS) | us)
    message_id = draw(us)
    dataset_type = draw(st.sampled_from((0x0000, 0x0001, 0x0101, 0xFFFE)))
    sop_class = draw(st.none() | uids)
    sop_instance = draw(st.none() | uids)
    parts = [element(0x0100, struct.pack("<H", field)), element(0x0110, struct.pack("<H", message_id)),
             element(0x0800, struct.pack("<H", dataset_type))]
    for tag, uid in ((0x0002, sop_class), (0x1000, sop_instance)):
        if uid is not None:
            value = uid.encode("ascii")
            parts.append(element(tag, value + b"\0" * (len(value) % 2)))
    parts += draw(st.lists(st.builds(element, st.sampled_from(OTHER_ELEMENTS), st.binary(max_size=24)), max_size=4))
    parts = draw(st.permutations(parts))
    body = b"".join(parts)
    if draw(st.booleans()):  # Command Group Length first, as requestors send it
        body = element(0x0000, struct.pack("<I", len(body))) + body
    return CommandSet(body, field, message_id, dataset_type != 0x0101, sop_class or "", sop_instance or "")


any_element = st.builds(
    element,
    st.sampled_from(UID_ELEMENTS + US_ELEMENTS + OTHER_ELEMENTS) | us,
    st.binary(max_size=70),
    st.sampled_from((0x0000, 0x0000, 0x0000, 0x0002, 0x0008, 0xFFFE)),
)
element_soups = st.lists(any_element, max_size=12).map(b"".join)
"""Command-set-shaped bytes: elements of any tag, group and value, known and unknown, in any number."""


@st.composite
def mutated(draw: st.DrawFn, encoded: bytes) -> bytes:
    """``encoded`` after one to eight byte-level mutations, each of a kind fuzzers find bugs with."""
    data = bytearray(encoded)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(("flip", "byte", "truncate", "insert", "delete", "length", "duplicate")))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and at < len(data):
            data[at] = draw(st.sampled_from((0x00, 0x7F, 0x80, 0xFF)) | st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "length" and at + 8 <= len(data):  # an element header's length field, or what is there
            value = draw(st.sampled_from((0, 1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF)) | st.integers(0, 0xFFFFFFFF))
            data[at + 4 : at + 8] = struct.pack("<I", value)
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 32))]
    return bytes(data)
