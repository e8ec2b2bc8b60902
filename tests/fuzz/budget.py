"""How much fuzzing a run does: bounded defaults for the suite, more through the environment for long runs."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("ONCOAGENT_FUZZ_EXAMPLES", "300"))
BATCHES = int(os.environ.get("ONCOAGENT_FUZZ_BATCHES", "50"))
SEED = int(os.environ.get("ONCOAGENT_FUZZ_SEED", "20261129"))

# a property example that takes longer than this is a hang (parsing a command set is microseconds)
PROPERTIES = settings(max_examples=EXAMPLES, deadline=200, suppress_health_check=[HealthCheck.too_slow])
