"""The largest request body TransferLab accepts, computed from the upload settings in one place.

The web server refuses a request whose Content-Length is above this number with 413 before it
reads a byte of the body (and stops a chunked body when it passes it), so nobody can fill the temp
folder or hold a thread with a body no view would accept. Views still check their own, smaller
limits and answer in words; this is only the outer wall, so it must never be below what a view
allows: the largest of a dataset zip, a weights file and a full Classify request, plus room for
the multipart framing around them.
"""

from __future__ import annotations

from django.conf import settings

# Boundaries, part headers and the form's small fields (CSRF token, label, model name) take a few
# KiB even with 32 files; 1 MiB covers them with room to spare.
MULTIPART_MARGIN_BYTES = 1_048_576


def largest_upload_bytes() -> int:
    """The largest payload a view accepts: a dataset zip, a weights upload or a full image request."""
    return max(
        settings.IMPORT_MAX_ZIP_BYTES,
        settings.MAX_WEIGHTS_UPLOAD_BYTES,
        settings.MAX_FILES_PER_REQUEST * settings.MAX_UPLOAD_BYTES,
    )


def max_request_body_bytes() -> int:
    """The largest request body the server lets through to Django (2,049 MiB with the defaults)."""
    return largest_upload_bytes() + MULTIPART_MARGIN_BYTES
