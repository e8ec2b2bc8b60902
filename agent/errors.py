"""The one exception hierarchy of OncoAgent.

Every error we raise on purpose derives from :class:`OncoAgentError`. Pipelines signal what the executor
should do with a failure by the subclass they raise: :class:`InputError` fails the job at once (the input is
bad and retrying cannot help), :class:`TransientError` retries it with backoff.
"""

from __future__ import annotations


class OncoAgentError(Exception):
    """Base of every error OncoAgent raises on purpose."""


class ConfigError(OncoAgentError):
    """The configuration is invalid; the message names the source, the key and what was expected."""


class StoreError(OncoAgentError):
    """The job store cannot do what was asked (unknown id, illegal state change, schema too new)."""


class DataDirLockedError(OncoAgentError):
    """Another daemon already runs on this data directory."""


class InputError(OncoAgentError):
    """The input cannot be processed (corrupt, unsupported, incomplete). The job fails without retry."""


class TransientError(OncoAgentError):
    """A failure that may pass (resource busy, peer down). The job is retried with backoff."""


class PipelineNotFoundError(OncoAgentError):
    """No pipeline is registered under the requested name."""
