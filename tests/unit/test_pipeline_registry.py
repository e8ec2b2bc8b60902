from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from pipelines import registry
from pipelines.base import PipelineInput, PipelineResult
from pipelines.errors import PipelineNotFoundError, PipelineOptionsError


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tile_px: int = 640


class _WithOptions:
    name: ClassVar[str] = "unit-options"
    version: ClassVar[str] = "2.1"
    Options = _Options

    def __init__(self, options: _Options) -> None:
        self.options = options

    def run(self, inp: PipelineInput, out_dir: Path) -> PipelineResult:
        return PipelineResult(summary={"tile_px": self.options.tile_px})


registry.register(_WithOptions.name, _WithOptions)


def test_options_are_validated_and_passed_to_the_constructor() -> None:
    assert registry.version("unit-options") == "2.1"
    pipeline = registry.get("unit-options", {"tile_px": 512})
    assert isinstance(pipeline, _WithOptions) and pipeline.options.tile_px == 512


def test_bad_options_name_pipeline_and_key() -> None:
    with pytest.raises(PipelineOptionsError, match=r"pipelines.unit-options.tile_px: expected"):
        registry.validate_options({"unit-options": {"tile_px": "big"}})
    with pytest.raises(PipelineOptionsError, match=r"pipelines.unit-options.tiles: unknown key"):
        registry.validate_options({"unit-options": {"tiles": 3}})
    with pytest.raises(PipelineOptionsError, match=r"pipelines.inspect: this pipeline takes no options"):
        registry.validate_options({"inspect": {"x": 1}})
    with pytest.raises(PipelineOptionsError, match=r"pipelines.nope: no pipeline named 'nope'"):
        registry.validate_options({"nope": {}})


def test_unknown_pipeline() -> None:
    with pytest.raises(PipelineNotFoundError, match="known: "):
        registry.get("does-not-exist")
    assert "inspect" in registry.names()
