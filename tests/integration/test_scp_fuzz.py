"""No peer can crash the SCP: thousands of mutated association streams (tests/fuzz/streams.py, seeded) against
a running StorageSCP with a real Store, many connections at once, in batches. After every batch a well-formed
C-ECHO succeeds within 2 s; at the end the SCP's threads and file descriptors are back to where they were,
nothing but whole instances from well-formed stores is on disk and recorded, and nothing was logged as an
error or exception. Run it longer with ONCOAGENT_FUZZ_BATCHES / ONCOAGENT_FUZZ_SEED (see tests/fuzz)."""

from __future__ import annotations

import logging
import random
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pydicom
import pytest

from agent.store import Store
from dicom_node.scp import StorageSCP
from dicom_node.settings import AllowedCaller, ScpConfig
from tests.fuzz import budget, wire
from tests.fuzz.peer import Outcome, echo, play
from tests.fuzz.streams import Ending, Stream, Study, stream
from tests.support.net import free_port
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
              pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning"),  # pydicom, on hostile data
              pytest.mark.filterwarnings("ignore:The value length:UserWarning")]

STREAMS_PER_BATCH = 100
CONNECTIONS_AT_ONCE = 24
DEADLINE_S = 0.5  # the SCP's ARTIM, idle and message deadlines: a stalled stream costs half a second
PEER_TIMEOUT_S = 5.0  # longer than any deadline of the SCP: a connection still open then is a hang
ECHO_WITHIN_S = 2.0


class Defects(logging.Handler):
    """Keeps the SCP's log records that mean a defect: errors, and anything logged with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)

    def __str__(self) -> str:
        return "\n".join(self.format(record) for record in self.records[:5])


def reproducer(seed: int, number: int) -> str:
    return f"stream(random.Random('{seed}:{number}'), Study('2.25.{seed}1', '2.25.{seed}2'))"


def test_mutated_association_streams_never_crash_starve_or_leak(tmp_path: Path) -> None:
    seed, batches = budget.SEED, budget.BATCHES
    study = Study(f"2.25.{seed}1", f"2.25.{seed}2")
    store = Store.open(f"sqlite:///{tmp_path / 'scp.db'}")
    settings = ScpConfig(port=free_port(), min_free_disk_mb=1, allowed_callers=(AllowedCaller("MODALITY"),),
                         max_associations=2 * CONNECTIONS_AT_ONCE, acse_timeout_s=DEADLINE_S,
                         dimse_timeout_s=DEADLINE_S, network_timeout_s=DEADLINE_S)
    storage = tmp_path / "storage"
    scp = StorageSCP(store, settings, storage)
    defects, library = Defects(), Defects()
    logging.getLogger("dicom_node").addHandler(defects)
    # pynetdicom logs an ERROR with a traceback for each A-ASSOCIATE-RQ holding a non-ASCII AE title or UID
    # (pynetdicom.utils.decode_bytes): counted and reported, not failed on: the SCP itself handles those
    logging.getLogger("pynetdicom").addHandler(library)
    port = scp.start()
    pool: ThreadPoolExecutor | None = None
    try:
        # a well-formed stream first: the harness's own streams do store (a fuzzer that cannot pass one is blind)
        warm_up = stream(random.Random(f"{seed}:warm-up"), study, kind="well-formed")
        outcome = play(port, warm_up, PEER_TIMEOUT_S)
        assert [(status, sop) for _, status, sop in wire.responses(outcome.reply)] == [
            (0x0000, ""), (0x0000, warm_up.valid_stores[0])], outcome.reply.hex()
        assert echo(port, ECHO_WITHIN_S) == 0
        wait_for(lambda: not any(thread.name.startswith("dicom-assoc") for thread in threading.enumerate()), 5,
                 what="the warm-up association threads to end")  # counted closed before its thread ends
        process = psutil.Process()
        threads, fds = threading.active_count(), process.num_fds()

        pool = ThreadPoolExecutor(CONNECTIONS_AT_ONCE, thread_name_prefix="fuzz-peer")
        kinds: Counter[str] = Counter()
        problems: list[str] = []
        confirmed: set[str] = set(warm_up.valid_stores)
        confirmed_valid: set[str] = set(warm_up.valid_stores)  # well-formed stores the SCP confirmed
        offered: set[str] = set(warm_up.offered)
        echo_times: list[float] = []
        started = time.monotonic()
        for batch in range(batches):
            numbers = range(batch * STREAMS_PER_BATCH, (batch + 1) * STREAMS_PER_BATCH)
            streams = [stream(random.Random(f"{seed}:{number}"), study) for number in numbers]

            def attempt(item: Stream) -> Outcome | BaseException:
                try:
                    return play(port, item, PEER_TIMEOUT_S)
                except OSError as exc:  # connecting failed: the listener is gone or its backlog full
                    return exc

            for number, item, result in zip(numbers, streams, pool.map(attempt, streams), strict=True):
                kinds[item.kind] += 1
                offered.update(item.offered)
                where = f"stream {number} ({item.kind}, {item.ending.value}): {reproducer(seed, number)}"
                if isinstance(result, BaseException):
                    problems.append(f"{where}: could not connect: {result!r}")
                    continue
                if result.hung:
                    problems.append(f"{where}: the SCP neither closed nor finished within {PEER_TIMEOUT_S} s")
                if not result.whole:
                    continue
                try:
                    answers = wire.responses(result.reply)
                except (ValueError, KeyError, UnicodeDecodeError) as exc:
                    problems.append(f"{where}: malformed reply {result.reply[:64].hex()}: {exc!r}")
                    continue
                stored = {sop for field, status, sop in answers if field == 0x8001 and status == 0x0000}
                confirmed |= stored
                confirmed_valid.update(item.valid_stores)
                if not set(item.valid_stores) <= stored:
                    problems.append(f"{where}: a well-formed C-STORE was not confirmed: {answers}")
            began = time.monotonic()
            try:
                status = echo(port, ECHO_WITHIN_S)
            except OSError as exc:
                pytest.fail(f"C-ECHO after batch {batch} failed: {exc!r}; streams {numbers}, seed {seed}")
            echo_times.append(time.monotonic() - began)
            assert status == 0x0000 and echo_times[-1] < ECHO_WITHIN_S, (batch, status, echo_times[-1])
        fuzz_s = time.monotonic() - started
        pool.shutdown(wait=True)
        pool = None
        assert not problems, f"{len(problems)} problem(s), seed {seed}:\n" + "\n".join(problems[:20])

        try:
            wait_for(lambda: threading.active_count() == threads and not scp.active_associations()
                     and not scp.pending_connections(), 15, what=f"the SCP's threads to return to {threads}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {scp.active_associations()} association(s) open, "
                                 f"{scp.pending_connections()} pending; threads "
                                 f"{[thread.name for thread in threading.enumerate()]}") from None
        wait_for(lambda: process.num_fds() <= fds, 15, what=f"open file descriptors to return to {fds}")
        assert not defects.records, f"the SCP logged {len(defects.records)} defect(s):\n{defects}"

        files = [path for path in storage.rglob("*") if path.is_file()]
        assert all(path.suffix == ".dcm" for path in files), [p for p in files if p.suffix != ".dcm"]
        on_disk = {path.stem for path in files}
        assert confirmed <= on_disk <= offered, (confirmed - on_disk, on_disk - offered)
        assert store.counts()["instances"] == len(on_disk)
        cut_short = {}
        for path in files:  # every stored instance is whole: it reads to its end and holds its whole image
            ds = pydicom.dcmread(path)
            assert ds.SOPInstanceUID == path.stem and store.has_instance(path.stem)
            raw = path.read_bytes()
            problem = wire.dataset_cut_short(raw)
            if problem is not None:
                cut_short[path.stem] = problem
            elif path.stem in confirmed_valid:
                expected = int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8
                assert len(ds.PixelData) == expected, path
        assert not cut_short, cut_short  # a dataset cut inside an element is refused (0xC210), never stored
        total = batches * STREAMS_PER_BATCH
        print(f"\nfuzz seed {seed}: {total} streams in {fuzz_s:.1f} s ({total / fuzz_s:.0f}/s), "
              f"{len(on_disk)} stored ({len(confirmed)} confirmed), "
              f"slowest C-ECHO {max(echo_times):.3f} s, pynetdicom errors logged {len(library.records)}, "
              f"refused before association {scp.refused_connections()}; kinds {dict(kinds)}")
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
        logging.getLogger("dicom_node").removeHandler(defects)
        logging.getLogger("pynetdicom").removeHandler(library)
        scp.stop()
        store.close()


def _cut_inside_an_element(dataset: bytes) -> bytes:
    return dataset[: dataset.index(b"\xe0\x7f\x10\x00") - 9]  # inside (0028,0103) Pixel Representation


def _file_meta_first(dataset: bytes) -> bytes:
    return struct.pack("<HHI", 0x0002, 0x0000, 6) + b"ABCDEF" + dataset  # (0002,0000) UL, 6 bytes: not a UL


def _cut_after_pixel_data(dataset: bytes) -> bytes:
    return dataset + b"\xe0\x7f\x20\x00"  # half an element header


def _value_missing(dataset: bytes) -> bytes:
    return dataset[: dataset.index(b"\x28\x00\x01\x01") + 8]  # (0028,0101) announces 2 bytes; none follow


@pytest.mark.parametrize(
    "damage",
    [
        # seed 20261129, stream 413: cut inside an element before Pixel Data, pydicom taking the short value
        pytest.param(_cut_inside_an_element, id="cut inside an element"),
        # seed 1, stream 7780: pydicom reads group 0002 at the start of a dataset as file meta and raised
        # BytesLengthException out of the C-STORE handler
        pytest.param(_file_meta_first, id="dataset beginning with file meta elements"),
        # seed 20261129: bytes after a whole Pixel Data element ending inside an element (the check stopped there)
        pytest.param(_cut_after_pixel_data, id="cut inside an element after the pixel data"),
        # seed 1, streams 10627 and 13191: ends right after an element header (a read of no bytes went unnoticed)
        pytest.param(_value_missing, id="element header without its value"),
    ],
)
def test_a_damaged_dataset_found_by_the_fuzzer_is_refused_with_a_status(tmp_path: Path,
                                                                        damage: Callable[[bytes], bytes]) -> None:
    """Each was stored with 0x0000, or crashed the handler, before its fix: now a failure status, nothing
    stored, nothing logged as a defect."""
    store = Store.open(f"sqlite:///{tmp_path / 'scp.db'}")
    scp = StorageSCP(store, ScpConfig(port=free_port(), min_free_disk_mb=1), tmp_path / "storage")
    defects = Defects()
    logging.getLogger("dicom_node").addHandler(defects)
    port = scp.start()
    try:
        sop = "2.25.413"
        dataset = damage(wire.secondary_capture(sop, "2.25.1", "2.25.2"))
        command = wire.command_set(wire.C_STORE_RQ, 1, wire.SECONDARY_CAPTURE, sop, has_dataset=True)
        message = [wire.pdu(wire.P_DATA_TF, wire.pdv(wire.STORE_CONTEXT, wire.COMMAND | wire.LAST, command)),
                   wire.pdu(wire.P_DATA_TF, wire.pdv(wire.STORE_CONTEXT, wire.LAST, dataset))]
        sent = Stream("damaged dataset", (wire.associate_rq(), *message, wire.RELEASE_RQ), Ending.HALF_CLOSE)
        outcome = play(port, sent, PEER_TIMEOUT_S)
        assert not defects.records, str(defects)
        (field, status, _), = wire.responses(outcome.reply)
        assert field == 0x8001 and status & 0xF000 in (0xA000, 0xC000), hex(status)  # failure: refused
        assert store.counts()["instances"] == 0
        assert not any(path.is_file() for path in (tmp_path / "storage").rglob("*"))
    finally:
        logging.getLogger("dicom_node").removeHandler(defects)
        scp.stop()
        store.close()
