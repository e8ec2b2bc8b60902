"""The daemon's exception hierarchy, and the two outcome errors it shares with the pipelines.

Every error the daemon raises on purpose about itself (configuration, store, data directory) derives from
:class:`OncoAgentError`. The pipelines raise their own errors, all deriving from
:class:`pipelines.errors.PipelineError`; the daemon maps them to job outcomes at its edges (the worker, the
one-shot ``process`` command, routing, the CLI).

Two meanings are the same whoever detects the failure, so they have one class each, defined by the pipelines
(the lowest layer, which every room may import) and re-exported here for the daemon's own code:
:class:`InputError` (the input cannot be processed: the job fails without retry, the file goes to quarantine, a
DICOM store is refused) and :class:`TransientError` (it may pass: the job is retried with backoff). Catching
both rooms' errors at an edge therefore means ``except (OncoAgentError, PipelineError)``.
"""

from __future__ import annotations

from pipelines.errors import InputError, TransientError

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "ConfigError",
    "DataDirLockedError",
    "InputError",
    "OncoAgentError",
    "ReviewStateError",
    "StoreError",
    "TransientError",
    "UnknownUserError",
    "UserExistsError",
]


# Exit status of the ``oncoagent`` command: 0 success, 1 some work failed, 2 bad configuration or usage, 3 the
# data directory is in use.
EXIT_FAILED, EXIT_CONFIG, EXIT_LOCKED = 1, 2, 3


class OncoAgentError(Exception):
    """Base of every error the daemon raises on purpose about itself."""


class ConfigError(OncoAgentError):
    """The configuration is invalid; the message names the source, the key and what was expected."""


class StoreError(OncoAgentError):
    """The job store cannot do what was asked (unknown id, illegal state change, schema too new)."""


class LeaseLost(StoreError):
    """A daemon reported the outcome of a job it no longer holds: its lease expired and another daemon claimed
    the job again. The outcome is not recorded (the other daemon's is)."""


class UserExistsError(StoreError):
    """A web worklist account of that name exists already (names are unique, disabled accounts included)."""


class UnknownUserError(StoreError):
    """No web worklist account has that name or id."""


class ReviewStateError(StoreError):
    """A review is not in the state the change needs (a decision on a signed review, a second sign-off, a
    reopen of a review still in progress), or the job has no result to review. Nothing was changed."""


class DataDirLockedError(OncoAgentError):
    """Another daemon already runs on this data directory."""
