"""The errors the reports raise on purpose: every one derives from :class:`ReportError`.

:func:`reports.render.write_reports` turns them, like the errors of the libraries it calls, into warnings or
missing outputs on the result; the daemon never sees them unless it calls a builder directly.
"""

from __future__ import annotations


class ReportError(Exception):
    """Base of every error the reports raise on purpose."""


class ReportInputError(ReportError):
    """A result's content does not follow its pipeline's schema."""
