from __future__ import annotations

import json
import logging

import pytest

from agent import logs


def test_json_lines_carry_job_and_uids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    log = logging.getLogger("agent.test")
    with logs.job_context(job=42, series="1.2.3"):
        with logs.job_context(study="1.2"):
            log.info("working on %s", "tiles")
        log.warning("outer")
    log.info("no context")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0] == {**lines[0], "msg": "working on tiles", "job": 42, "series": "1.2.3", "study": "1.2"}
    assert lines[0]["level"] == "INFO" and lines[0]["logger"] == "agent.test"
    assert "study" not in lines[1] and lines[1]["job"] == 42
    assert "job" not in lines[2]


def test_human_lines_show_context_suffix(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "human")
    with logs.job_context(job=7):
        logging.getLogger("agent.test").info("hello")
    assert capsys.readouterr().err.strip().endswith("agent.test: hello [job=7]")
