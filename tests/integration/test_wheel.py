"""What ships works on a new machine: a wheel of the tracked files, installed outside the checkout, processes a
slide and an MR series with ``oncoagent process``.

The models, the default configuration, the radiomics parameters and the report templates travel in the wheel
as package data. The wheel's venv borrows the checkout venv's third-party packages (torch alone is gigabytes)
through a plain path line in a ``.pth`` file: such a line adds the folder to ``sys.path`` but does not run the
``.pth`` files inside it, so the editable install's hook stays inert and the checkout is not importable there
(checked before the wheel goes in).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.store import migrations
from pipelines.synthetic.mri_series import MRSeriesSpec, write_mr_series
from pipelines.synthetic.slides import SlideSpec, write_slide
from tests.conftest import REPO

pytestmark = pytest.mark.slow

# top-level folders of the checkout that ship, and where the wheel puts them (pyproject.toml's package-dir)
SHIPPED_FOLDERS = {"agent": "agent", "dicom_node": "dicom_node", "pipelines": "pipelines", "reports": "reports",
                   "config": "oncoagent_config"}


@dataclass(frozen=True)
class Installed:
    root: Path  # outside the checkout: the cwd of every command
    venv: Path
    env: dict[str, str]
    build_log: str

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.venv / "bin" / "python", "-c", code)

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              check=False, timeout=600)


def _tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60)
    return [name for name in listed.stdout.decode().split("\0") if name and (REPO / name).is_file()]


def _checked(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    return _tracked_files()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, tracked: list[str]) -> tuple[Path, str]:
    """The wheel, built from a copy of the tracked files (what a clone has), and pip's build output."""
    source = tmp_path_factory.mktemp("source")
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    build = _checked(subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist),
         "."], cwd=source, capture_output=True, text=True, check=False, timeout=600))
    (found,) = dist.glob("oncoagent-*.whl")
    return found, build.stdout + build.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: tuple[Path, str]) -> Installed:
    root = tmp_path_factory.mktemp("newmachine")
    assert not root.resolve().is_relative_to(REPO)
    venv = root / "venv"
    _checked(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True,
                            text=True, check=False, timeout=300))
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME"} and not k.startswith("ONCOAGENT_")}
    env["PYTHONNOUSERSITE"] = "1"
    installed = Installed(root, venv, env, wheel[1])
    site = Path(_checked(installed.python("import sysconfig; print(sysconfig.get_path('purelib'))")).stdout.strip())
    assert site.is_relative_to(venv)
    (site / "checkout-venv-packages.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    before = _checked(installed.python(
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('torch', 'pydicom', 'pip', 'agent', 'pipelines', 'reports', 'dicom_node', 'oncoagent_config')}))"))
    found = json.loads(before.stdout)
    assert found["torch"] and found["pydicom"] and found["pip"], "the checkout venv's packages are not reachable"
    assert not any(found[m] for m in ("agent", "pipelines", "reports", "dicom_node", "oncoagent_config")), (
        f"the checkout is importable from the new venv before the wheel is installed: {found}")
    # pip from the borrowed packages, run by the new venv's python, installs into the new venv; it must not touch
    # the editable install it sees on the borrowed path
    _checked(installed.run(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index",
                           "--ignore-installed", "--no-warn-script-location", wheel[0]))
    return installed


def test_the_wheel_holds_every_tracked_file_of_the_shipped_folders(wheel: tuple[Path, str],
                                                                   tracked: list[str]) -> None:
    with zipfile.ZipFile(wheel[0]) as archive:
        names = set(archive.namelist())
    expected = set()
    for name in tracked:
        top, _, rest = name.partition("/")
        if top in SHIPPED_FOLDERS and rest:
            expected.add(f"{SHIPPED_FOLDERS[top]}/{rest}")
    assert {"pipelines/models/mri/mri-lesion-unet.pt", "oncoagent_config/oncoagent.yaml",
            "oncoagent_config/radiomics.yaml", "reports/templates/report.html.j2"} <= expected
    assert sorted(expected - names) == []
    # setuptools has nothing to warn about: not the license's form, not a folder missing from the packages
    assert not re.search(r"BuildBackendWarning|DeprecationWarning", wheel[1]), wheel[1]


def test_the_installed_package_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    probe = _checked(installed.python(
        "import json, agent, dicom_node, reports, oncoagent_config\n"
        "from agent.config import PROJECT_CONFIG\n"
        "from pipelines.models.registry import MODELS_DIR\n"
        "from pipelines.mri.radiomics import DEFAULT_PARAMS\n"
        "print(json.dumps([agent.__file__, dicom_node.__file__, reports.__file__, oncoagent_config.__file__, "
        "str(PROJECT_CONFIG), str(MODELS_DIR), str(DEFAULT_PARAMS)]))"))
    for path in map(Path, json.loads(probe.stdout)):
        assert path.resolve().is_relative_to(installed.venv.resolve()), path
        assert path.exists(), path
    script = installed.venv / "bin" / "oncoagent"
    assert script.read_text().splitlines()[0] == f"#!{installed.venv / 'bin' / 'python'}"
    check = _checked(installed.run(script, "--data-dir", installed.root / "d", "config", "check"))
    assert f"configuration OK ({installed.venv}" in check.stdout and "oncoagent_config/oncoagent.yaml" in check.stdout


def test_the_installed_store_migrates_with_the_shipped_revisions(installed: Installed) -> None:
    """The Alembic revisions (and env.py) travel in the wheel: a new database reaches the checkout's head."""
    db = installed.root / "store.db"
    probe = _checked(installed.python(
        "import json\n"
        "from agent.store import Store, migrations\n"
        f"store = Store.open('sqlite:///{db}')\n"
        "print(json.dumps([store.migrate(), str(migrations.FOLDER)]))\n"
        "store.close()"))
    revision, folder = json.loads(probe.stdout)
    assert Path(folder).is_relative_to(installed.venv.resolve()) and revision == migrations.head()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(revision,)]
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'jobs'").fetchone() == (1,)


def test_oncoagent_process_runs_a_slide_and_an_mr_series_from_the_wheel(installed: Installed) -> None:
    inputs = installed.root / "in"
    write_slide(inputs / "case-1.tiff", SlideSpec(width=2048, height=2048, ctc=3, ctm=0, seed=9_101))
    series = write_mr_series(inputs / "series", MRSeriesSpec(lesions=1, labels=("malignant",), seed=9_102))
    out = installed.root / "out"
    # no --pipeline: the shipped default configuration's routing rules choose
    proc = installed.run(installed.venv / "bin" / "oncoagent", "--data-dir", installed.root / "d", "process",
                         inputs, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 succeeded, 0 failed" in proc.stdout
    slide = json.loads((out / "case-1" / "result.json").read_text())
    mr = json.loads((out / f"series-{series.series_uid}" / "result.json").read_text())
    assert slide["pipeline"] == "wsi-ctc" and [m["name"] for m in slide["models"]] == ["wsi-ctc-yolo11n"]
    assert mr["pipeline"] == "mri-tumour"
    assert [m["name"] for m in mr["models"]] == ["mri-lesion-unet", "mri-lesion-svm"]
    manifests = installed.venv.glob("lib/python*/site-packages/pipelines/models/*/manifest.json")
    shipped = {name: raw["sha256"] for m in manifests for name, raw in json.loads(m.read_text()).items()}
    for model in (*slide["models"], *mr["models"]):
        assert model["sha256"] == shipped[model["name"]]
    for doc, folder in ((slide, out / "case-1"), (mr, out / f"series-{series.series_uid}")):
        assert doc["files"] and all((folder / name).is_file() for name in doc["files"])
        assert "research use only" in (folder / "report.html").read_text().lower()  # the shipped template
