"""The web worklist (issue 10): its pages of cases and its Deep Zoom tiles, each against the same work done
directly in one process.

(a) Worklist: ``--cases`` (default 10,000) succeeded wsi-ctc jobs in a SQLite store (one real generated slide
shared by all; summaries of varied counts and scores; a third of the cases reviewed, some signed off). The
worklist server (``agent.web.server.WebServer``: uvicorn, in a process of its own as in the daemon) is asked
``--requests`` times over HTTP, by a signed-in client, for (1) the first page and (2) a filtered search (status
new, a priority, a search text in the accession). Each is compared with the same query run directly on the store
(``agent.store.cases.list_cases``, what the route does before turning rows into JSON): p50 and p95 in ms, and the
overhead ratio HTTP p50 / store p50.

(b) Tiles: every tile of the top ``--levels`` Deep Zoom levels of a generated ``--slide-px``² slide, made by
``DeepZoomGenerator.get_tile`` plus JPEG encoding in a plain loop in one process (each tile once), against the
server over HTTP with 4 concurrent clients (threads, each signed in beforehand) in two ways: (1) without a tile
cache, the clients sharing the tiles out, so each tile is made once as in the loop; (2) with the default cache,
each client viewing the whole slide from its own starting point, as four reviewers of one slide do. Goal: HTTP
tiles/s ÷ loop tiles/s >= 1.0 (caching and threads must pay for HTTP).

    .venv/bin/python benchmarks/web_worklist.py [--cases 10000] [--requests 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openslide
from openslide.deepzoom import DeepZoomGenerator
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import Settings, WebSettings
from agent.passwords import hash_password
from agent.store import Store, schema, users
from agent.store.cases import CaseFilter, list_cases
from agent.web.server import WebServer
from agent.web.tiles import JPEG_QUALITY, OVERLAP, TILE_SIZE
from pipelines.synthetic.slides import SlideSpec, write_slide

PASSWORD = "benchmark-pw-1"


def seed(store: Store, slide: Path, cases: int, rng: random.Random) -> None:
    """``cases`` succeeded jobs in bulk (one transaction per table: seeding is not what is measured)."""
    now = time.time()
    reviewer = users.add_user(store.engine, "bench", "admin", hash_password(PASSWORD), now)
    inputs, jobs, reviews = [], [], []
    for i in range(1, cases + 1):
        ctc, ctm = rng.randint(0, 60), rng.randint(0, 5)
        received = now - rng.uniform(0, 30 * 86400)
        inputs.append({"id": i, "kind": "slide", "key": f"{slide}#{i}", "path": str(slide), "fingerprint": f"f{i}",
                       "attrs": {"file_name": f"case-{i:05d}.tiff",
                                 "context": {"accession_number": f"ACC{i:05d}", "patient_id": f"P{i % 2000:04d}"}},
                       "instance_count": 0, "state": "routed", "created_at": received, "updated_at": received})
        summary = {"ctc_count": ctc, "ctm_count": ctm, "counts": {"CTC": ctc, "CTM": ctm},
                   "density_per_mm2": {"CTC": ctc / 4.6, "CTM": ctm / 4.6},
                   "priority_score": round(rng.random(), 4), "priority": rng.choice(["low", "medium", "high"])}
        jobs.append({"id": i, "input_id": i, "pipeline": "wsi-ctc", "pipeline_version": "1.0.0",
                     "input_fingerprint": f"f{i}", "status": "succeeded", "priority": rng.choice([0, 1, 2, 2, 2]),
                     "attempts": 1, "max_attempts": 3, "created_at": received, "updated_at": received + 60,
                     "started_at": received + 1, "finished_at": received + 60, "result_path": None,
                     "summary": summary, "models": [{"name": "wsi-ctc-yolo11n", "version": "1.0.0"}]})
        if i % 3 == 0:
            signed = i % 6 == 0
            reviews.append({"job_id": i, "version": 1, "status": "signed_off" if signed else "in_review",
                            "holder_id": reviewer.id, "started_at": received + 100, "updated_at": received + 200,
                            "signed_at": received + 200 if signed else None,
                            "signed_by": reviewer.id if signed else None})
    with store.engine.begin() as conn:
        conn.execute(insert(schema.inputs), inputs)
        conn.execute(insert(schema.jobs), jobs)
        conn.execute(insert(schema.reviews), reviews)


def serve(root: Path, ports: multiprocessing.Queue[int], cache_mb: int) -> None:
    """The worklist server over the seeded store, with a tile cache of ``cache_mb`` (0: every tile asked for is
    made)."""
    store = Store.open(f"sqlite:///{root / 'store.db'}")
    server = WebServer(Settings(data_dir=root, web=WebSettings(port=0, tile_cache_mb=cache_mb)), store)
    server.start()
    ports.put(server.port)
    threading.Event().wait()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": round(1000 * statistics.median(ordered), 2),
            "p95_ms": round(1000 * ordered[max(0, int(0.95 * len(ordered)) - 1)], 2)}


def timed(call: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def signed_in(base: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert token is not None
    client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": token.group(1)})
    assert client.get("/api/me").status_code == 200
    return client


def worklist(store: Store, base: str, requests: int) -> dict[str, Any]:
    client = signed_in(base)
    queries = {
        "first page": ({}, CaseFilter()),
        "filtered search": ({"status": "new", "priority": 2, "q": "ACC01"},
                            CaseFilter(status="new", priority=2, search="ACC01")),
    }
    out: dict[str, Any] = {}
    for name, (params, where) in queries.items():
        answer = client.get("/api/cases", params=params)
        answer.raise_for_status()
        direct_rows, direct_total = list_cases(store.engine, where, 0, 50)
        assert answer.json()["total"] == direct_total and len(answer.json()["cases"]) == len(direct_rows)
        http = percentiles(timed(lambda p=params: client.get("/api/cases", params=p).raise_for_status(), requests))
        direct = percentiles(timed(lambda w=where: list_cases(store.engine, w, 0, 50), requests))
        out[name] = {"matches": direct_total, "http": http, "store": direct,
                     "overhead_p50": round(http["p50_ms"] / direct["p50_ms"], 2)}
    return out


def tile_list(zoom: DeepZoomGenerator, levels: int) -> list[tuple[int, int, int]]:
    return [(level, col, row) for level in range(zoom.level_count - levels, zoom.level_count)
            for col in range(zoom.level_tiles[level][0]) for row in range(zoom.level_tiles[level][1])]


def tile_loop(slide: Path, wanted: list[tuple[int, int, int]]) -> float:
    """Seconds to make every wanted tile once with DeepZoomGenerator in a plain loop (JPEG as the server)."""
    handle = openslide.open_slide(str(slide))
    zoom = DeepZoomGenerator(handle, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False)
    t0 = time.perf_counter()
    for level, col, row in wanted:
        zoom.get_tile(level, (col, row)).save(io.BytesIO(), "JPEG", quality=JPEG_QUALITY)
    return time.perf_counter() - t0


def fetch_over_http(base: str, job_id: int, parts: list[list[tuple[int, int, int]]]) -> float:
    """Seconds for one client thread per part (signed in beforehand) to fetch its tiles."""
    clients = [signed_in(base) for _ in parts]

    def fetch(index: int) -> int:
        for level, col, row in parts[index]:
            clients[index].get(f"/api/cases/{job_id}/slide_files/{level}/{col}_{row}.jpeg").raise_for_status()
        return len(parts[index])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(parts)) as pool:
        assert sum(pool.map(fetch, range(len(parts)))) == sum(map(len, parts))
    return time.perf_counter() - t0


def tiles(slide: Path, root: Path, levels: int) -> dict[str, Any]:
    """(1) distinct: no cache, the 4 clients share the tiles out, each made once, as in the loop; (2) shared
    viewing: the default cache, each of the 4 clients views the whole slide (every tile, from its own starting
    point), as four reviewers of one slide do; tiles delivered per second against the loop's tiles per second."""
    handle = openslide.open_slide(str(slide))
    wanted = tile_list(DeepZoomGenerator(handle, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False), levels)
    loop_s = tile_loop(slide, wanted)
    loop_rate = len(wanted) / loop_s
    out: dict[str, Any] = {"tiles": len(wanted), "loop_s": round(loop_s, 2), "loop_tiles_per_s": round(loop_rate, 1)}
    shift = len(wanted) // 4
    scenarios = {
        "distinct_no_cache": (0, [wanted[part::4] for part in range(4)]),
        "four_viewers_default_cache": (WebSettings().tile_cache_mb,
                                       [wanted[k * shift:] + wanted[:k * shift] for k in range(4)]),
    }
    for name, (cache_mb, parts) in scenarios.items():
        with served(root, cache_mb) as base:
            seconds = fetch_over_http(base, 1, parts)
        delivered = sum(map(len, parts))
        out[name] = {"delivered": delivered, "http_s": round(seconds, 2),
                     "http_tiles_per_s": round(delivered / seconds, 1),
                     "ratio": round(delivered / seconds / loop_rate, 2)}
    return out


@contextmanager
def served(root: Path, cache_mb: int) -> Iterator[str]:
    """The server in a process of its own, as in the daemon: the clients here do not share its GIL."""
    context = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[int] = context.Queue()
    server = context.Process(target=serve, args=(root, ports, cache_mb), daemon=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=120)}"
    finally:
        server.terminate()
        server.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--slide-px", type=int, default=16_384)
    parser.add_argument("--levels", type=int, default=3, help="top Deep Zoom levels whose every tile is fetched")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp:
        root = Path(tmp)
        slide = root / "bench.tiff"
        write_slide(slide, SlideSpec(width=args.slide_px, height=args.slide_px, ctc=20, ctm=2, seed=777))
        store = Store.open(f"sqlite:///{root / 'store.db'}")
        seed(store, slide, args.cases, random.Random(7))
        try:
            with served(root, 0) as base:
                result = {"cases": args.cases, "worklist": worklist(store, base, args.requests)}
            result["tiles"] = tiles(slide, root, args.levels)
        finally:
            store.close()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
