"""The MR case routes when the case's files are not as the pipeline left them, on the real web server over a real
SQLite store (no pipeline run: the results are a generated series and its true label map): a missing or broken
series is a 404 with the reason, a missing label map leaves the image without outlines, a slide has no volume."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.config import Settings, WebSettings
from agent.passwords import hash_password
from agent.records import InputKind
from agent.review_records import Role
from agent.store import Store
from agent.web.server import WebServer
from pipelines.synthetic.mri_series import MRSeries, write_mr_series
from tests.support.mr_case import PASSWORD, signed_in
from tests.unit.test_web_volumes import SPEC, write_label_map


def analysed(store: Store, root: Path, name: str, pipeline: str = "mri-tumour") -> tuple[int, MRSeries]:
    """A succeeded job of ``pipeline`` on a generated series in ``root/name``, its result the true label map."""
    series = write_mr_series(root / name, SPEC)
    result = root / f"{name}-result"
    result.mkdir()
    write_label_map(result / "lesions.nii.gz", series, SPEC)
    inp, _ = store.upsert_file_input(InputKind.DICOM_SERIES, series.folder, name, {"SeriesDescription": name})
    job = store.enqueue(inp.id, pipeline, "1")[0].id
    claimed = store.claim()
    assert claimed is not None and claimed.id == job
    lesions: list[dict[str, Any]] = [{"index": 1, "label": "malignant", "volume_ml": 1.0,
                                      "malignancy_probability": 0.9, "features": {}}]
    store.succeed(job, result, {"lesions": lesions, "label_map_file": "lesions.nii.gz"}, [])
    return job, series


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    store = Store.open(f"sqlite:///{tmp_path / 'oncoagent.db'}")
    store.add_user("ada", Role.ADMIN, hash_password(PASSWORD), time.time())
    server = WebServer(Settings(web=WebSettings(port=0)), store)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", store
    finally:
        server.stop()
        store.close()


def test_a_case_without_its_files_is_a_404_with_the_reason(served: tuple[str, Store], tmp_path: Path) -> None:
    base, store = served
    whole, series = analysed(store, tmp_path, "whole")
    gappy, gappy_series = analysed(store, tmp_path, "gappy")
    gappy_series.files[5].unlink()
    gone, gone_series = analysed(store, tmp_path, "gone")
    shutil.rmtree(gone_series.folder)
    broken, broken_series = analysed(store, tmp_path, "broken")
    broken_series.files[0].write_bytes(b"not DICOM")
    unlabelled, _ = analysed(store, tmp_path, "unlabelled")
    (tmp_path / "unlabelled-result" / "lesions.nii.gz").unlink()
    slide, _ = analysed(store, tmp_path, "slide", pipeline="wsi-ctc")
    with signed_in(base, "ada") as ada:
        volume = ada.get(f"/api/cases/{whole}/volume").json()
        assert (volume["slices"], volume["outlines"], volume["outline_error"]) == (SPEC.slices, True, None)
        k = round(series.lesions[0].centre_ijk[0])
        assert volume["lesions"][0]["slices"][0] <= k <= volume["lesions"][0]["slices"][1]

        def refused(job: int, path: str = "/volume") -> str:
            answer = ada.get(f"/api/cases/{job}{path}")
            assert answer.status_code == 404, (job, answer.status_code, answer.text)
            return str(answer.json()["detail"])

        assert "missing slice(s)" in refused(gappy) and "missing slice(s)" in refused(gappy, "/slices/0.png")
        assert refused(gone) == f"case {gone}: the series' files are gone"
        assert "IM0000.dcm: not a readable DICOM file" in refused(broken, "/slices/2.png")
        assert refused(slide) == f"case {slide} is a slide, not an MR series"
        assert refused(whole, f"/slices/{SPEC.slices}.png") == "no slice 12: the series has 12 across axis 0"
        assert refused(whole, "/slices/64.png?axis=1") == "no slice 64: the series has 64 across axis 1"
        assert ada.get(f"/api/cases/{whole}/slices/63.png?axis=2").status_code == 200
        assert ada.get(f"/api/cases/{whole}/slices/3.png?axis=3").status_code == 422
        unlabelled_volume = ada.get(f"/api/cases/{unlabelled}/volume").json()
        assert unlabelled_volume["outlines"] is False
        assert unlabelled_volume["outline_error"] == "the result has no lesions.nii.gz"
        assert unlabelled_volume["lesions"] == [{"index": 1, "colour": "#e6194b", "slices": None, "ranges": None,
                                                 "centre_voxel": None}]
        plain = ada.get(f"/api/cases/{unlabelled}/slices/{k}.png")
        assert plain.status_code == 200 and plain.content.startswith(b"\x89PNG")
        assert ada.get(f"/api/cases/{slide}").json().get("counts", {}).get("ai") == {"CTC": 0, "CTM": 0}
        with httpx.Client(base_url=base) as nobody:
            assert nobody.get(f"/api/cases/{gone}/volume").status_code == 401
