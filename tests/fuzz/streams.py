"""Mutated association streams from a seeded generator: what broken or hostile peers send an SCP.

:func:`stream` is pure: the same ``random.Random`` state gives the same bytes, so a failing stream is
reproduced from the seed and its index alone (``stream(random.Random(f"{seed}:{index}"), ...)``).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from enum import Enum

from tests.fuzz import wire
from tests.fuzz.wire import COMMAND, ECHO_CONTEXT, LAST, P_DATA_TF, SECONDARY_CAPTURE, STORE_CONTEXT, VERIFICATION

MAX_PDU_ADVERTISED = 1 * 2**20  # what the SCP advertises (dicom_node.association)
MAX_ASSOCIATE_RQ = 256 * 2**10


class Ending(Enum):
    """What the peer does once it has sent its bytes."""

    HALF_CLOSE = "half-close"  # shut down its sending side and read the SCP's reply until the SCP closes
    CLOSE = "close"  # close at once without reading (FIN)
    RESET = "reset"  # close at once with SO_LINGER 0 (RST)
    STALL = "stall"  # send nothing more and wait for the SCP to close at its deadline


@dataclass(frozen=True)
class Stream:
    kind: str
    chunks: tuple[bytes, ...]  # sent one after another (TCP_NODELAY: each its own segment, as far as TCP goes)
    ending: Ending
    offered: tuple[str, ...] = ()  # SOP instances of the C-STORE requests the stream was built from
    valid_stores: tuple[str, ...] = ()  # those of well-formed C-STOREs: a whole reply must confirm them


@dataclass(frozen=True)
class Study:
    study: str
    series: str


def uid(rng: random.Random) -> str:
    return f"2.25.{rng.getrandbits(96)}"


def mutate(rng: random.Random, data: bytes, count: int | None = None) -> bytes:
    """``data`` after a few byte-level mutations: bit flips, interesting bytes, cuts, inserts, duplications,
    length fields overwritten."""
    out = bytearray(data)
    for _ in range(count if count is not None else rng.randint(1, 6)):
        at = rng.randrange(len(out) + 1)
        kind = rng.randrange(7)
        if kind == 0 and at < len(out):
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and at < len(out):
            out[at] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif kind == 2:
            del out[at : at + rng.randint(1, 16)]
        elif kind == 3:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind == 4:
            out[at:at] = out[at : at + rng.randint(1, 64)]
        elif kind == 5 and at + 4 <= len(out):
            value = rng.choice((0, 1, 2, 5, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32), rng.getrandbits(12)))
            out[at : at + 4] = struct.pack(rng.choice(("<I", ">I")), value)
        elif kind == 6:
            del out[at:]
    return bytes(out)


def _echo(message_id: int, context_id: int = ECHO_CONTEXT) -> bytes:
    return wire.pdu(P_DATA_TF, wire.pdv(context_id, COMMAND | LAST,
                                        wire.command_set(wire.C_ECHO_RQ, message_id, VERIFICATION)))


def _store_parts(rng: random.Random, study: Study) -> tuple[str, bytes, bytes]:
    """(SOP instance, command set, dataset) of a well-formed C-STORE."""
    sop = uid(rng)
    command = wire.command_set(wire.C_STORE_RQ, rng.randrange(1, 0xFFFF), SECONDARY_CAPTURE, sop, has_dataset=True)
    return sop, command, wire.secondary_capture(sop, study.study, study.series)


def _store(command: bytes, dataset: bytes, context_id: int = STORE_CONTEXT, fragment: int = 4000) -> list[bytes]:
    """A C-STORE as P-DATA-TF PDUs: the command, then the dataset in fragments of ``fragment`` bytes."""
    pdus = [wire.pdu(P_DATA_TF, wire.pdv(context_id, COMMAND | LAST, command))]
    for at in range(0, len(dataset), fragment):
        last = LAST if at + fragment >= len(dataset) else 0
        pdus.append(wire.pdu(P_DATA_TF, wire.pdv(context_id, last, dataset[at : at + fragment])))
    return pdus


def _random_pdu(rng: random.Random, kinds: tuple[int, ...]) -> bytes:
    body = rng.randbytes(rng.randint(0, 300))
    length = rng.choice((len(body), len(body), rng.getrandbits(16), rng.getrandbits(32)))
    return bytes([rng.choice(kinds), rng.randrange(256)]) + struct.pack(">I", length) + body


def _chunked(rng: random.Random, data: bytes) -> tuple[bytes, ...]:
    """``data`` in one piece, or cut at random places (partial headers arrive on their own)."""
    if len(data) < 2 or rng.random() < 0.5:
        return (data,)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return tuple(data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True))


def stream(rng: random.Random, study: Study, kind: str | None = None) -> Stream:
    """One mutated association stream of ``kind`` (by default one of :data:`KINDS`, drawn with equal weight)."""
    kind = kind or rng.choice(KINDS)
    calling = "MODALITY" if kind == "well-formed" or rng.random() < 0.9 else "INTRUDER"  # not allowed: refused
    rq = wire.associate_rq(calling=calling)
    ending = rng.choice((Ending.HALF_CLOSE, Ending.HALF_CLOSE, Ending.HALF_CLOSE, Ending.CLOSE, Ending.RESET))
    sop, command, dataset = _store_parts(rng, study)
    offered = [sop]
    valid: tuple[str, ...] = ()
    if kind == "random bytes":
        parts = [rng.randbytes(rng.randint(0, 3000))]
    elif kind == "wrong first PDU type":
        parts = [_random_pdu(rng, (0x00, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x41, 0xFF))]
    elif kind == "oversize A-ASSOCIATE-RQ":
        length = rng.choice((MAX_ASSOCIATE_RQ + 1, 64 * 2**20, 0xFFFFFFFF))
        parts = [b"\x01\x00" + struct.pack(">I", length) + rq[6 : rng.randint(6, len(rq))]]
    elif kind == "truncated A-ASSOCIATE-RQ":
        parts = [rq[: rng.randrange(len(rq))]]
    elif kind == "mutated A-ASSOCIATE-RQ":
        parts = [mutate(rng, rq), _echo(1), wire.RELEASE_RQ]
    elif kind == "A-ASSOCIATE-RQ then junk":
        parts = [rq, rng.randbytes(rng.randint(1, 2000))]
    elif kind == "A-ASSOCIATE-RQ then a wrong PDU type":
        parts = [rq, _random_pdu(rng, (0x01, 0x02, 0x03, 0x06, 0x08, 0x10, 0xFF)), _echo(2)]
    elif kind == "oversize P-DATA-TF":
        length = rng.choice((MAX_PDU_ADVERTISED + 1, 64 * 2**20, 0xFFFFFFFF))
        parts = [rq, b"\x04\x00" + struct.pack(">I", length) + rng.randbytes(rng.randint(0, 100))]
    elif kind == "truncated P-DATA-TF":
        message = b"".join(_store(command, dataset))
        parts = [rq, message[: rng.randrange(len(message))]]
        ending = rng.choice((ending, Ending.STALL)) if rng.random() < 0.2 else ending
    elif kind == "dataset before its command":
        parts = [rq, wire.pdu(P_DATA_TF, wire.pdv(STORE_CONTEXT, rng.choice((0, LAST)), dataset[:500])),
                 *_store(command, dataset)]
    elif kind == "fragments out of order":
        pdus = _store(command, dataset, fragment=rng.choice((16, 100, 300)))
        rng.shuffle(pdus)
        parts = [rq, *pdus]
    elif kind == "new command mid-dataset":
        pdus = _store(command, dataset, fragment=200)
        cut = rng.randint(2, len(pdus) - 1)
        other_sop, other_command, other_dataset = _store_parts(rng, study)
        offered.append(other_sop)
        parts = [rq, *pdus[:cut], *rng.choice((_store(other_command, other_dataset), [_echo(3)])), *pdus[cut:]]
    elif kind == "command in fragments, with a dataset fragment between":
        half = rng.randint(1, len(command) - 1)
        parts = [rq, wire.pdu(P_DATA_TF, wire.pdv(STORE_CONTEXT, COMMAND, command[:half])),
                 wire.pdu(P_DATA_TF, wire.pdv(STORE_CONTEXT, rng.choice((0, LAST)), dataset[:64])),
                 wire.pdu(P_DATA_TF, wire.pdv(STORE_CONTEXT, COMMAND | LAST, command[half:])),
                 *_store(b"", dataset)[1:]]
    elif kind == "wrong presentation context":
        wrong = rng.choice((0, 2, 5, 7, 127, 255))
        if rng.random() < 0.5:
            parts = [rq, _echo(4, wrong)]
        else:  # the command on one context, the dataset on another
            pdus = _store(command, dataset)
            parts = [rq, pdus[0], *(wire.pdu(P_DATA_TF, wire.pdv(wrong, p[11], p[12:])) for p in pdus[1:])]
    elif kind == "garbage command":
        garbage = rng.choice((rng.randbytes(rng.randint(0, 200)), mutate(rng, command)))
        parts = [rq, wire.pdu(P_DATA_TF, wire.pdv(rng.choice((ECHO_CONTEXT, STORE_CONTEXT)), COMMAND | LAST,
                                                   garbage)), *_store(b"", dataset)[1:], _echo(5)]
    elif kind == "bad PDV lengths":
        pdus = _store(command, dataset)
        target = rng.randrange(len(pdus))
        pdu = bytearray(pdus[target])
        pdu[6:10] = struct.pack(">I", rng.choice((0, 1, 2, len(pdu) - 9, len(pdu), 0xFFFFFFFF)))
        pdus[target] = bytes(pdu)
        parts = [rq, *pdus]
    elif kind == "mutated P-DATA-TF":
        pdus = _store(command, dataset, fragment=rng.choice((200, 4000)))
        target = rng.randrange(len(pdus))
        pdus[target] = mutate(rng, pdus[target])
        parts = [rq, *pdus, _echo(6)]
    elif kind == "mutated command set":
        parts = [rq, *_store(mutate(rng, command), dataset), _echo(7)]
    elif kind == "mutated dataset":  # may be a valid store after all: counted by the test from the replies
        parts = [rq, *_store(command, mutate(rng, dataset)), wire.RELEASE_RQ]
    elif kind == "early close":
        whole = b"".join([rq, _echo(8), *_store(command, dataset), wire.RELEASE_RQ])
        parts, ending = [whole[: rng.randrange(len(whole))]], rng.choice((Ending.CLOSE, Ending.RESET,
                                                                          Ending.HALF_CLOSE))
    elif kind == "release or abort, then more":
        parts = [rq, rng.choice((wire.RELEASE_RQ, wire.ABORT_RQ)), _echo(9), rng.randbytes(rng.randint(0, 64))]
    elif kind == "spliced streams":
        pool = [rq, _echo(10), *_store(command, dataset), wire.RELEASE_RQ, wire.ABORT_RQ, rng.randbytes(50)]
        parts = [rng.choice(pool)[: rng.randint(0, 400)] for _ in range(rng.randint(1, 8))]
    elif kind == "stalled message":
        message = b"".join(_store(command, dataset))
        parts, ending = [rq, message[: rng.randint(1, len(message) - 1)]], Ending.STALL
    else:  # "well-formed": echo, store, release (the control group: must succeed)
        parts = [rq, _echo(11), *_store(command, dataset, fragment=rng.choice((64, 1000, 4000))), wire.RELEASE_RQ]
        valid, ending = (sop,), Ending.HALF_CLOSE
    return Stream(kind, _chunked(rng, b"".join(parts)), ending, tuple(offered), valid)


KINDS = ("random bytes", "wrong first PDU type", "oversize A-ASSOCIATE-RQ", "truncated A-ASSOCIATE-RQ",
         "mutated A-ASSOCIATE-RQ", "A-ASSOCIATE-RQ then junk", "A-ASSOCIATE-RQ then a wrong PDU type",
         "oversize P-DATA-TF", "truncated P-DATA-TF", "dataset before its command", "fragments out of order",
         "new command mid-dataset", "command in fragments, with a dataset fragment between",
         "wrong presentation context", "garbage command", "bad PDV lengths", "mutated P-DATA-TF",
         "mutated command set", "mutated dataset", "early close", "release or abort, then more", "spliced streams",
         "stalled message", "well-formed")
