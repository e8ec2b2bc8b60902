"""The triage worklist: a web application served by the daemon (:mod:`agent.web.server`), where pathologists and
radiologists review the AI's findings, correct them and sign the case off.

* :mod:`~agent.web.app` — the pages (login, worklist, case) and the application put together;
* :mod:`~agent.web.api` — the JSON API under ``/api/`` (cases, decisions, Deep Zoom tiles, crops);
* :mod:`~agent.web.series_api` — an MR case's part of it (the volume, window/levelled slices with the lesion
  outlines, the note);
* :mod:`~agent.web.auth` — sessions, the trusted proxy header, CSRF, the login rate limit;
* :mod:`~agent.web.context` — what every route needs, and the one gate (who is asking, may they);
* :mod:`~agent.web.case_views` — what a case shows, and which roles see it;
* :mod:`~agent.web.tiles` — slides opened with openslide, tiles and crops, bounded caches;
* :mod:`~agent.web.volumes` — MR series read with the pipeline's loader, their label maps, slices as PNG, an LRU.
"""
