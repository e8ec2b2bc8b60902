"""Worklist cases put straight into a store, for the web tests that exercise the web app rather than the
pipelines: a real generated slide on disk, its "AI result" made from the slide's own truth boxes, recorded as a
succeeded wsi-ctc job the way the executor records one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agent.records import InputKind
from agent.store import Store
from pipelines.synthetic.slides import CLASS_NAMES, SlideSpec, write_slide


def seed_slide_case(store: Store, folder: Path, name: str, spec: SlideSpec) -> int:
    """A succeeded wsi-ctc job on a generated slide whose detections are the slide's truth; its job id."""
    folder.mkdir(parents=True, exist_ok=True)
    slide = folder / name
    truth = write_slide(slide, spec)
    detections = [{"class": CLASS_NAMES[c], "confidence": round(0.99 - 0.01 * i, 3), "l0_box": [x0, y0, x1, y1]}
                  for i, (c, x0, y0, x1, y1) in enumerate(truth.boxes)]
    counts = {cls: sum(1 for d in detections if d["class"] == cls) for cls in CLASS_NAMES}
    summary: dict[str, Any] = {"ctc_count": counts["CTC"], "ctm_count": counts["CTM"], "counts": counts,
                               "priority_score": min(1.0, 0.1 * len(detections)), "priority": "high",
                               "detections": detections, "coordinates": "level-0 pixels"}
    inp, _new = store.upsert_file_input(InputKind.SLIDE, slide, f"seed-{name}", {"file_name": name})
    job, _queued = store.enqueue(inp.id, "wsi-ctc", "1.0.0")
    claimed = store.claim(time.time(), owner="seed")
    assert claimed is not None and claimed.id == job.id
    result = folder / f"result-{job.id}"
    result.mkdir()
    (result / "result.json").write_text(json.dumps({"summary": summary, "job_id": job.id}))
    store.succeed(job.id, result, summary, [{"name": "wsi-ctc-yolo11n", "version": "1.0.0"}], owner="seed")
    return job.id
