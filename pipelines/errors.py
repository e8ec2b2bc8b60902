"""The errors of the computing library: every error a pipeline raises on purpose derives from PipelineError.

The subclass says what went wrong, so that whoever runs a pipeline can decide what to do with the failure
without reading messages:

- :class:`InputError`: the input cannot be processed (corrupt, unsupported, incomplete); running it again
  cannot help.
- :class:`TransientError`: a failure that may pass (a resource busy, a peer down); running it again later may
  succeed.
- :class:`PipelineOptionsError`: a pipeline's options are invalid; the message names the pipeline, the key and
  what was expected.
- :class:`PipelineNotFoundError`: no pipeline is registered under the requested name.
- :class:`PluginError`: a plugin module cannot be imported.
- :class:`~pipelines.models.registry.ModelError` (the weights registry) and
  :class:`~pipelines.mri.radiomics.RadiomicsError` derive from PipelineError too.

How the daemon maps them, at its edge (the library itself knows nothing of jobs): in a job, an InputError
fails the job without retry and moves a slide to quarantine, a TransientError retries it with backoff, and any
other error fails it with its reason. ``InputError`` and ``TransientError`` are the daemon's own classes for
these two meanings too (``agent.errors`` re-exports them), so one class means one outcome wherever the failure
is detected. On the command line, invalid options give the configuration exit status and other pipeline errors
the "work failed" one; a plugin that cannot be imported is a configuration error of the daemon.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipelines raise on purpose."""


class InputError(PipelineError):
    """The input cannot be processed (corrupt, unsupported, incomplete). The job fails without retry."""


class TransientError(PipelineError):
    """A failure that may pass (resource busy, peer down). The job is retried with backoff."""


class PipelineOptionsError(PipelineError):
    """A pipeline's options are invalid; the message names the pipeline (``pipelines.<name>``), key and expectation."""


class PipelineNotFoundError(PipelineError):
    """No pipeline is registered under the requested name."""


class PluginError(PipelineError):
    """A plugin module that should register pipelines cannot be imported."""
