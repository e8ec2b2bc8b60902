from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agent.config import PROJECT_CONFIG, Settings, load_settings, masked
from agent.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_project_config_states_exactly_the_builtin_defaults() -> None:
    from_file = Settings.model_validate(yaml.safe_load(PROJECT_CONFIG.read_text()))
    assert from_file == Settings()


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    cfg = write(tmp_path, "executor:\n  workers: 3\n  max_attempts: 7\nlog:\n  level: WARNING\n")
    env = {"ONCOAGENT_EXECUTOR__WORKERS": "5", "ONCOAGENT_LOG__FORMAT": "json"}
    loaded = load_settings(cfg, environ=env, overrides={"executor.workers": 9, "log.level": None})
    s = loaded.settings
    assert s.executor.workers == 9  # flag beats environment beats file
    assert s.executor.max_attempts == 7  # file beats default
    assert s.log.format == "json"  # environment beats default
    assert s.log.level == "WARNING"  # a flag left unset does not override
    assert loaded.sources[("executor", "workers")] == "command line"


def test_environment_can_name_the_config_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, "executor:\n  workers: 4\n")
    loaded = load_settings(None, environ={"ONCOAGENT_CONFIG": str(cfg)})
    assert loaded.config_file == cfg
    assert loaded.settings.executor.workers == 4


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    cfg = write(tmp_path, "executor:\n  wrokers: 3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    text = str(err.value)
    assert str(cfg) in text
    assert "executor.wrokers: unknown key (did you mean 'workers'?)" in text


def test_bad_value_from_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, ""), environ={"ONCOAGENT_EXECUTOR__WORKERS": "many"})
    text = str(err.value)
    assert "environment ONCOAGENT_EXECUTOR__WORKERS: executor.workers: expected a valid integer" in text
    assert "'many'" in text


def test_out_of_range_and_wrong_choice(tmp_path: Path) -> None:
    cfg = write(tmp_path, "executor:\n  workers: 0\nlog:\n  format: xml\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    text = str(err.value)
    assert "executor.workers: expected greater than or equal to 1, got 0" in text
    assert "log.format: expected 'human' or 'json', got 'xml'" in text


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("{name: a, pipeline: inspect, match: {dicom: {Modalty: MR}}}", "'Modalty' is not one"),
        ("{name: a, pipeline: inspect, match: {path_regex: '(['}}", "a valid regular expression"),
        ("{name: a, pipeline: inspect, match: {suffix: [svs]}}", "suffixes that start with a dot"),
        ("{name: a, pipeline: inspect, match: {dicom: {Modality: {regexp: MR}}}}", "{regex: PATTERN}"),
    ],
)
def test_routing_rule_errors(tmp_path: Path, rule: str, expected: str) -> None:
    cfg = write(tmp_path, f"routing:\n  rules: [{rule}]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert "routing.rules[0].match" in str(err.value)
    assert expected in str(err.value)


def test_duplicate_rule_names_and_bad_cron(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "routing:\n  rules: [{name: a, pipeline: x}, {name: a, pipeline: y}]\n"
        "scheduler:\n  batches: [{name: n, cron: 'every night', paths: [/tmp]}]\n",
    )
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert "repeated: a" in str(err.value)
    assert "scheduler.batches[0].cron: expected a crontab expression" in str(err.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "executor: [\n"), environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})


def test_relative_data_dir_is_resolved_and_database_defaults_to_sqlite_inside(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "data_dir: somewhere\n"), environ={}).settings
    assert s.data_dir.is_absolute()
    assert s.data_dir.name == "somewhere"
    assert s.database_url == f"sqlite:///{s.data_dir / 'oncoagent.db'}"


def test_show_masks_passwords() -> None:
    s = Settings.model_validate({"store": {"url": "postgresql://onco:hunter2@db.example/onco"}})
    shown = masked(s)
    assert shown["store"]["url"] == "postgresql://onco:***@db.example/onco"
    assert "hunter2" not in str(shown)


def test_store_url_must_be_sqlite_or_postgresql() -> None:
    with pytest.raises(ValueError, match="sqlite:// or postgresql://"):
        Settings.model_validate({"store": {"url": "mysql://x/y"}})


def test_production_example_is_valid() -> None:
    loaded = load_settings(PROJECT_CONFIG.with_name("oncoagent.production.yaml"), environ={})
    assert loaded.settings.scp.port == 104 and loaded.settings.destinations[0].name == "pacs"
    assert loaded.settings.scheduler.batches[0].cron == "0 2 * * *"


def test_tls_needs_its_files() -> None:
    with pytest.raises(ValueError, match="certificate and private_key"):
        Settings.model_validate({"scp": {"tls": {"enabled": True}}})
    with pytest.raises(ValueError, match="unique destination names"):
        Settings.model_validate({"destinations": [
            {"name": "a", "ae_title": "A", "host": "h", "port": 104},
            {"name": "a", "ae_title": "B", "host": "h", "port": 105},
        ]})


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ("[0, -1]", "executor.gpus[1]: expected greater than or equal to 0, got -1"),
        ("[1, 0, 1]", "executor.gpus: expected each GPU once (repeated: 1)"),
        ("[0, true]", "executor.gpus[1]: expected a valid integer, got True"),
        ("[0.5]", "executor.gpus[0]: expected a valid integer, got 0.5"),
    ],
)
def test_gpus_are_distinct_non_negative_integers(tmp_path: Path, gpus: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, f"executor:\n  gpus: {gpus}\n"), environ={})
    assert expected in str(err.value)


def test_gpus_default_to_none_and_come_from_file_or_environment(tmp_path: Path) -> None:
    assert Settings().executor.gpus == []  # no pinning
    assert load_settings(write(tmp_path, "executor:\n  gpus: [1, 0]\n"), environ={}).settings.executor.gpus == [1, 0]
    env = {"ONCOAGENT_EXECUTOR__GPUS": "[2, 3]"}
    assert load_settings(None, environ=env).settings.executor.gpus == [2, 3]


def test_the_dask_backend_needs_a_scheduler_address(tmp_path: Path) -> None:
    assert Settings().executor.backend == "local"
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, "executor:\n  backend: dask\n"), environ={})
    assert "executor.backend dask needs executor.dask.scheduler" in str(err.value)
    env = {"ONCOAGENT_EXECUTOR__BACKEND": "dask", "ONCOAGENT_EXECUTOR__DASK__SCHEDULER": "tcp://10.0.0.5:8786"}
    dask = load_settings(None, environ=env).settings.executor
    assert dask.backend == "dask" and dask.dask.scheduler == "tcp://10.0.0.5:8786"
    assert dask.dask.gpu_pipelines == ["wsi-ctc"]


def test_a_shared_root_takes_received_instances_and_results_and_leaves_the_rest_local(tmp_path: Path) -> None:
    local = Settings.model_validate({"data_dir": str(tmp_path / "var")}).paths
    assert (local.storage, local.results, local.staging) == (
        tmp_path / "var" / "storage", tmp_path / "var" / "results", tmp_path / "var" / "tmp")
    env = {"ONCOAGENT_STORAGE__SHARED_ROOT": str(tmp_path / "nfs")}
    paths = load_settings(write(tmp_path, f"data_dir: {tmp_path / 'var'}\n"), environ=env).settings.paths
    assert paths.storage == tmp_path / "nfs" / "storage" and paths.results == tmp_path / "nfs" / "results"
    assert paths.staging == tmp_path / "nfs" / "results" / ".staging"  # renamed into results/: the same disk
    assert (paths.inbox, paths.tmp, paths.quarantine, paths.lock) == (
        local.inbox, local.tmp, local.quarantine, local.lock)
