"""Folder ingest, split by what arrives, over one shared "file finished" detector.

* ``finished.py`` — :class:`FinishedFiles`: which files in the watched folders have finished arriving
  (settling, change events or polling, rescans, what was seen and taken); ``events.py`` — the watchdog
  observer and which mounts are polled instead; ``knobs.py`` — the ``ingest`` settings, resolved;
* ``slides.py`` — scanner-folder slides: parts, sidecar and filename context, moving out of the inbox;
* ``dicom_files.py`` — DICOM files dropped into folders, stored like received instances;
* ``folders.py`` — :class:`FolderWatcher`, the daemon's intake: the inbox (consumed, unusable files
  quarantined) and scanner folders (read in place), each finished file handed to the kind it is.

A new ingest source that arrives as files is a module beside ``slides.py`` and ``dicom_files.py``, chosen in
:meth:`FolderWatcher.take`.
"""

from agent.ingest.events import NETWORK_FILESYSTEMS, filesystem_type
from agent.ingest.finished import files_under
from agent.ingest.folders import FolderWatcher
from pipelines.wsi.slide_files import SLIDE_SUFFIXES

__all__ = ["NETWORK_FILESYSTEMS", "SLIDE_SUFFIXES", "FolderWatcher", "files_under", "filesystem_type"]
