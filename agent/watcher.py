"""Folder intake now lives in :mod:`agent.ingest`; this module keeps its public names importable from here."""

from agent.ingest import NETWORK_FILESYSTEMS, SLIDE_SUFFIXES, FolderWatcher, files_under, filesystem_type

__all__ = ["NETWORK_FILESYSTEMS", "SLIDE_SUFFIXES", "FolderWatcher", "files_under", "filesystem_type"]
