"""The web worklist (issue 10): its pages of cases and its Deep Zoom tiles, each against the same work done
directly in one process.

(a) Worklist: ``--cases`` (default 10,000) succeeded wsi-ctc jobs in a SQLite store (one real generated slide
shared by all; summaries of varied counts and scores; a third of the cases reviewed, some signed off). The
worklist server (``agent.web.server.WebServer``: uvicorn, in a process of its own as in the daemon) is asked
``--requests`` times over HTTP, by a signed-in client, for (1) the first page and (2) a filtered search (status
new, a priority, a search text in the accession). Each is compared with the same query run directly on the store
(``agent.store.cases.list_cases``, what the route does before turning rows into JSON): p50 and p95 in ms, and the
overhead ratio HTTP p50 / store p50.

(b) Tiles: every tile of the top ``--levels`` Deep Zoom levels of a generated ``--slide-px``² slide (none
cached: each tile asked for once), fetched over HTTP by 4 concurrent clients (each a quarter of the tiles),
against ``DeepZoomGenerator.get_tile`` plus JPEG encoding in a plain loop in one process on the same slide.
Goal: HTTP tiles/s ÷ loop tiles/s >= 1.0 (the server's threads must pay for HTTP).

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
from concurrent.futures import ThreadPoolExecutor
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


def serve(root: Path, ports: multiprocessing.Queue[int]) -> None:
    """The worklist server over the seeded store, without a tile cache (every tile asked for is made)."""
    store = Store.open(f"sqlite:///{root / 'store.db'}")
    server = WebServer(Settings(data_dir=root, web=WebSettings(port=0, tile_cache_mb=0)), store)
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


def tiles(slide: Path, base: str, levels: int, job_id: int) -> dict[str, Any]:
    handle = openslide.open_slide(str(slide))
    zoom = DeepZoomGenerator(handle, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False)
    wanted = tile_list(zoom, levels)
    t0 = time.perf_counter()
    for level, col, row in wanted:
        out = io.BytesIO()
        zoom.get_tile(level, (col, row)).save(out, "JPEG", quality=JPEG_QUALITY)
    loop_s = time.perf_counter() - t0
    clients = [signed_in(base) for _ in range(4)]

    def fetch(part: int) -> int:
        fetched = 0
        for level, col, row in wanted[part::4]:
            answer = clients[part].get(f"/api/cases/{job_id}/slide_files/{level}/{col}_{row}.jpeg")
            answer.raise_for_status()
            fetched += 1
        return fetched

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        fetched = sum(pool.map(fetch, range(4)))
    http_s = time.perf_counter() - t0
    assert fetched == len(wanted)
    loop_rate, http_rate = len(wanted) / loop_s, len(wanted) / http_s
    return {"tiles": len(wanted), "loop_s": round(loop_s, 2), "loop_tiles_per_s": round(loop_rate, 1),
            "http_4_clients_s": round(http_s, 2), "http_tiles_per_s": round(http_rate, 1),
            "ratio": round(http_rate / loop_rate, 2)}


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
        ports: multiprocessing.Queue[int] = multiprocessing.get_context("spawn").Queue()
        server = multiprocessing.get_context("spawn").Process(target=serve, args=(root, ports), daemon=True)
        server.start()  # a process of its own, as in the daemon: the clients here do not share its GIL
        try:
            base = f"http://127.0.0.1:{ports.get(timeout=120)}"
            result = {"cases": args.cases, "worklist": worklist(store, base, args.requests),
                      "tiles": tiles(slide, base, args.levels, job_id=1)}
        finally:
            server.terminate()
            server.join(30)
            store.close()
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
