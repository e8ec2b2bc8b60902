"""What a batch reads besides folders (agent.batch_sources) and how its config is checked: the store source
selects each input's latest result within its window, and with older_models only results of another pipeline or
model version than the installed one; a pacs source must name a destination."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.batch_sources import DAY_S, InstalledVersions, store_inputs
from agent.config import BatchSettings, Settings, StoreSource
from agent.records import Job
from agent.store import Store
from pipelines.models.registry import MODELS_DIR
from tests.unit.test_store import slide_input


def succeed(store: Store, input_id: int, pipeline: str, version: str, models: list[dict[str, str]],
            tmp_path: Path) -> Job:
    job = store.enqueue(input_id, pipeline, version)[0]
    store.claim(owner="n")
    return store.succeed(job.id, tmp_path / str(job.id), {}, models, owner="n")


def unet(version: str) -> list[dict[str, str]]:
    return [{"name": "mri-lesion-unet", "version": version, "sha256": "x"},
            {"name": "mri-lesion-svm", "version": "1.0.0", "sha256": "y"}]


def test_older_models_selects_results_of_another_pipeline_or_model_version(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    manifest = json.loads((MODELS_DIR / "mri" / "manifest.json").read_text())
    installed = manifest["mri-lesion-unet"]["version"]
    settings = make_settings()
    store = Store.open(settings.database_url)
    try:
        current = succeed(store, slide_input(store, "a.svs", "fa"), "mri-tumour", "1.0.0", unet(installed), tmp_path)
        old_model = succeed(store, slide_input(store, "b.svs", "fb"), "mri-tumour", "1.0.0", unet("0.9"), tmp_path)
        old_pipeline = succeed(store, slide_input(store, "c.svs", "fc"), "mri-tumour", "0.1", unet(installed),
                               tmp_path)
        gone = succeed(store, slide_input(store, "d.svs", "fd"), "no-such-pipeline", "1", [], tmp_path)
        versions = InstalledVersions(settings)
        assert [versions.outdated(j) for j in (current, old_model, old_pipeline, gone)] == [False, True, True, False]
        chosen = store_inputs(store, settings, StoreSource(older_models=True), time.time())
        assert [i.id for i in chosen] == [old_model.input_id, old_pipeline.input_id]
        everything = store_inputs(store, settings, StoreSource(days=1), time.time())
        assert len(everything) == 4
        assert store_inputs(store, settings, StoreSource(days=1), time.time() + 2 * DAY_S) == []  # outside
    finally:
        store.close()


def test_a_batch_must_read_something_and_a_pacs_source_name_a_destination(
        make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValidationError, match="reads nothing"):
        BatchSettings(name="n", cron="0 2 * * *")
    pacs = {"name": "n", "cron": "0 2 * * *", "pacs": {"destination": "pacs"}}
    with pytest.raises(ValidationError, match=r"pacs\.destination 'pacs' is not among destinations"):
        make_settings(scheduler={"batches": [pacs]})
    settings = make_settings(scheduler={"batches": [pacs]},
                             destinations=[{"name": "pacs", "ae_title": "PACS", "host": "h", "port": 104}])
    assert settings.scheduler.batches[0].options() == {
        "store": None, "send_results": "on_change",
        "pacs": {"destination": "pacs", "days": 1, "until": None, "modalities": [], "retrieve": "move",
                 "timeout_s": 600.0},
        "compare": {"count_abs": 2, "count_rel": 0.2, "lesion_match_mm": 10.0}}
    with pytest.raises(ValidationError, match="unique batch names; repeated: x"):
        make_settings(scheduler={"batches": [{"name": "x", "cron": "0 2 * * *", "paths": ["/a"]}] * 2})
