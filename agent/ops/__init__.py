"""Operations: what the daemon tells its operators while it runs.

* :mod:`~agent.ops.metrics` — Prometheus metrics: counters and histograms fed by events, and the store's
  numbers (jobs, outbox) read at scrape time;
* :mod:`~agent.ops.audit` — the association audit trail, written to the store in batches off the accept path;
* :mod:`~agent.ops.health` — the checks behind ``/healthz``;
* :mod:`~agent.ops.http` — the small HTTP server for ``/metrics`` and ``/healthz`` (``http:`` settings);
* :mod:`~agent.ops.wiring` — the daemon's operations put together (:class:`~agent.ops.wiring.Operations`);
* :mod:`~agent.ops.audit_commands` — ``oncoagent audit list``.
"""
