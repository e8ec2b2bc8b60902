"""Properties of the DIMSE command set parser for whatever bytes a peer sends: a Command or CommandError,
nothing else, never slow; every command read can be answered with a response pydicom reads back."""

from __future__ import annotations

import struct
from io import BytesIO

from hypothesis import example, given
from hypothesis import strategies as st
from pydicom.filereader import read_dataset

from dicom_node.dimse import Command, CommandError, read_command, response
from tests.fuzz.budget import PROPERTIES
from tests.fuzz.command_sets import CommandSet, command_sets, element, element_soups, mutated

statuses = st.sampled_from((0x0000, 0x0110, 0x0122, 0x0211, 0xA700, 0xA900, 0xC210, 0xC211)) | st.integers(0, 0xFFFF)


def read_or_refuse(data: bytes) -> Command | None:
    """read_command's result, or None when it raised the documented CommandError (anything else fails)."""
    try:
        return read_command(data)
    except CommandError:
        return None


def assert_answerable(command: Command, status: int) -> None:
    """The response to ``command`` is a command set pydicom reads, echoing what the request carried."""
    encoded = response(command, status)
    assert len(encoded) % 2 == 0
    ds = read_dataset(BytesIO(encoded), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(encoded) - 12
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (
        command.command_field | 0x8000, command.message_id, status)
    padding = "\0 \t\n\r\x0b\x0c"  # pydicom strips whitespace of any kind from a UI value
    assert str(ds.get("AffectedSOPClassUID", "")).strip(padding) == command.affected_sop_class.strip(padding)
    assert str(ds.get("AffectedSOPInstanceUID", "")).strip(padding) == command.affected_sop_instance.strip(padding)


@PROPERTIES
@given(command_sets(), statuses)
def test_a_well_formed_command_set_is_read_exactly_and_answered(command_set: CommandSet, status: int) -> None:
    command = read_command(command_set.encoded)
    assert command == Command(command_set.command_field, command_set.message_id, command_set.has_dataset,
                              command_set.affected_sop_class, command_set.affected_sop_instance)
    assert_answerable(command, status)


@PROPERTIES
@given(st.binary(max_size=512), statuses)
@example(b"", 0)
@example(b"\x00\x00\x00\x00\xff\xff\xff\xff", 0)
@example(element(0x0002, b"1.2\xff") + element(0x0100, b"\x30\x00") + element(0x0110, b"\x01\x00"), 0)
def test_arbitrary_bytes_are_a_command_or_refused(data: bytes, status: int) -> None:
    command = read_or_refuse(data)
    if command is not None:
        assert_answerable(command, status)


@PROPERTIES
@given(element_soups, statuses)
def test_any_mix_of_elements_is_a_command_or_refused(data: bytes, status: int) -> None:
    command = read_or_refuse(data)
    if command is not None:
        assert_answerable(command, status)


@PROPERTIES
@given(st.data(), statuses)
def test_a_mutated_command_set_is_a_command_or_refused(data: st.DataObject, status: int) -> None:
    original = data.draw(command_sets(), label="original")
    command = read_or_refuse(data.draw(mutated(original.encoded), label="mutated"))
    if command is not None:
        assert_answerable(command, status)


@PROPERTIES
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 64))
def test_a_last_element_is_read_only_when_its_length_ends_the_data(length: int, present: int) -> None:
    header = struct.pack("<HHI", 0x0000, 0x0002, length)
    data = element(0x0100, b"\x30\x00") + element(0x0110, b"\x01\x00") + header + b"1" * present
    command = read_or_refuse(data)  # past the end: refused; short of it: what follows is no element header
    assert (command is not None) == (length == present)
