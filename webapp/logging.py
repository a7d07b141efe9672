"""Logging filters for the service log."""

from __future__ import annotations

import logging


class ClientErrorsWithoutTraceback(logging.Filter):
    """Drop the traceback from records of 4xx answers, keeping their one line.

    Django's `django.request` logger writes a PermissionDenied (403) with its exception, and
    `django.security` does the same for unreadable requests (400): a stack trace for an
    expected refusal buries the real errors. Records of 5xx answers, and those without a status,
    keep theirs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500:
            record.exc_info = None
            record.exc_text = None
        return True
