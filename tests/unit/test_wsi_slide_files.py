"""Which files make up a slide (MIRAX, VMS, sidecars) and whether openslide can open it yet."""

from __future__ import annotations

from pathlib import Path

from pipelines.synthetic.slides import SlideSpec, write_slide
from pipelines.wsi.slide_files import OpenCheck, open_check, owner_of, sidecar_for, slide_parts
from tests.conftest import shared


def test_mirax_parts_come_from_slidedat(tmp_path: Path) -> None:
    main = tmp_path / "s.mrxs"
    main.write_bytes(b"index")
    assert slide_parts(main).missing == ("s/Slidedat.ini",)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "Slidedat.ini").write_text("[DATAFILE]\nFILE_COUNT=2\nFILE_0=Data0000.dat\nFILE_1=Data0001.dat\n")
    (tmp_path / "s" / "Data0000.dat").write_bytes(b"0")
    parts = slide_parts(main)
    assert parts.missing == ("s/Data0001.dat",) and not parts.complete
    (tmp_path / "s" / "Data0001.dat").write_bytes(b"1")
    parts = slide_parts(main)
    assert parts.complete
    assert [p.name for p in parts.parts] == ["s.mrxs", "Slidedat.ini", "Data0000.dat", "Data0001.dat"]
    assert owner_of(tmp_path / "s" / "Data0001.dat") == main
    # a data file whose index has not arrived yet still belongs to the slide to come
    (tmp_path / "t").mkdir()
    assert owner_of(tmp_path / "t" / "Data0000.dat") == tmp_path / "t.mrxs"


def test_vms_parts_and_sidecars(tmp_path: Path) -> None:
    vms = tmp_path / "h.vms"
    vms.write_text("[Virtual Microscope Specimen]\nImageFile=h.jpg\nImageFile(1,0)=h2.jpg\nMapFile=m.jpg\nNoLayers=1\n")
    assert slide_parts(vms).missing == ("h.jpg", "h2.jpg", "m.jpg")
    for name in ("h.jpg", "h2.jpg", "m.jpg"):
        (tmp_path / name).write_bytes(b"j")
    assert slide_parts(vms).complete and owner_of(tmp_path / "h2.jpg") == vms
    assert owner_of(tmp_path / "unrelated.jpg") is None
    svs = tmp_path / "a.svs"
    svs.write_bytes(b"x")
    assert sidecar_for(svs) is None
    (tmp_path / "a.json").write_text("{}")
    assert sidecar_for(svs) == tmp_path / "a.json" and owner_of(tmp_path / "a.json") == svs
    (tmp_path / "a.svs.json").write_text("{}")
    assert sidecar_for(svs) == tmp_path / "a.svs.json"
    assert owner_of(tmp_path / "later.ndpi.json") == tmp_path / "later.ndpi"  # its slide may come later
    assert owner_of(tmp_path / "notes.json") is None


def test_open_check_tells_a_slide_being_written_from_junk(tmp_path: Path) -> None:
    write_slide(tmp_path / "w.tiff", SlideSpec(width=1024, height=1024, ctc=1, ctm=0))
    assert open_check(tmp_path / "w.tiff")[0] is OpenCheck.OPENS
    data = (tmp_path / "w.tiff").read_bytes()
    (tmp_path / "half.tiff").write_bytes(data[: len(data) // 2])
    assert open_check(tmp_path / "half.tiff")[0] is OpenCheck.UNREADABLE
    (tmp_path / "x.tiff").write_bytes(b"x")
    assert open_check(tmp_path / "x.tiff")[0] is OpenCheck.NOT_A_SLIDE
    assert open_check(shared("wsi/openslide-python_small.svs"))[0] is OpenCheck.OPENS
