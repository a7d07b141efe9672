"""What an HTMX button gets when its session has ended or the server refuses: never a whole page in a box.

htmx swaps the answer of a button into a part of the page (Classify's results, an image card). A
redirect to the log-in page would land the whole log-in page, header and all, in that part; a
4xx/5xx answer is not swapped at all, so the button would seem to do nothing. So:

- a redirect to the log-in page becomes `HX-Redirect`: the whole page goes to log in, and comes
  back afterwards to the page the person was on (HX-Current-URL, same site only), not to the
  partial the button asked for;
- an error answers a one-line fragment (`data-request-error`) that static/js/errors.js shows in
  place of nothing. Pages without HTMX keep their full answers.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url
from django.utils.html import format_html
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

REDIRECTS = {301, 302, 303, 307, 308}


def is_htmx(request: HttpRequest) -> bool:
    """An htmx request that swaps its answer into part of a page (a history restore wants a whole page)."""
    headers = request.headers
    return headers.get("HX-Request") == "true" and headers.get("HX-History-Restore-Request") != "true"


def login_redirect(request: HttpRequest) -> HttpResponse:
    """Send the whole page to the log-in page, which then comes back to that page."""
    url = resolve_url(settings.LOGIN_URL)
    page = HtmxDetails(request).current_url_abs_path  # None for another site's address
    if page:
        url += "?" + urlencode({"next": page})
    return HttpResponseClientRedirect(url)


def error_fragment(status: int, title: str, message: str, *, reload: bool = False) -> HttpResponse:
    """The short message errors.js shows where the answer would have gone; `reload` offers a reload."""
    html = format_html(
        '<div class="alert alert-error" role="alert" data-request-error{}><strong>{}.</strong> {}</div>',
        " data-reload" if reload else "",
        title,
        message,
    )
    return HttpResponse(html, status=status)


class HtmxLoginRedirectMiddleware:
    """A log-in redirect answering an HTMX request becomes HX-Redirect (see the module's docstring)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if is_htmx(request) and _is_login_redirect(response):
            return login_redirect(request)
        return response


def _is_login_redirect(response: HttpResponse) -> bool:
    if response.status_code not in REDIRECTS:
        return False
    return urlsplit(response.get("Location", "")).path == resolve_url(settings.LOGIN_URL)
