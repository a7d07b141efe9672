"""HTMX buttons when the session has ended, the page's form token is stale, or the server fails.

htmx swaps the answer of a button into a part of the page. A login page there would put a whole
second page (header included) into the results; a 4xx/5xx answer is not swapped at all, so nothing
would show. So for an HTMX request: the end of a session sends the whole page to the log-in page,
which comes back to the page afterwards; every error answers a short message that
static/js/errors.js shows in place. Pages without HTMX keep their full, styled answers.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.sessions.models import Session
from django.test import Client, RequestFactory
from django_htmx.middleware import HtmxDetails

from webapp import diskspace, views
from webapp.middleware import busy_response


def htmx_headers(current_url: str = "http://testserver/") -> dict[str, str]:
    return {"HX-Request": "true", "HX-Current-URL": current_url}


def next_of(url: str) -> str | None:
    """The `next` a log-in address comes back to."""
    return parse_qs(urlsplit(url).query).get("next", [None])[0]


def is_fragment(html: str) -> bool:
    return "<html" not in html and "<header" not in html and "data-request-error" in html


# --- The session ended (logged out in another tab, or expired) ----------------------------------


def test_an_htmx_button_after_the_session_ended_sends_the_page_to_log_in_and_back(client, bob):
    client.force_login(bob)
    Session.objects.all().delete()  # logged out in another tab
    response = client.post("/", {}, headers=htmx_headers("http://testserver/"))
    assert response.status_code == 200
    assert response.content == b""  # no login page swapped into the results
    assert urlsplit(response["HX-Redirect"]).path == "/accounts/login/"
    assert next_of(response["HX-Redirect"]) == "/"


def test_the_log_in_page_comes_back_to_the_page_with_its_query_not_to_the_partial(client):
    response = client.get("/models/", {"q": "resnet"}, headers=htmx_headers("http://testserver/models/?q=resnet"))
    assert next_of(response["HX-Redirect"]) == "/models/?q=resnet"


def test_a_polling_partial_goes_back_to_its_page(client):
    page = "http://testserver/datasets/7/"
    response = client.get("/datasets/7/imports/3/", headers=htmx_headers(page))
    assert next_of(response["HX-Redirect"]) == "/datasets/7/"


def test_a_current_url_of_another_site_is_not_followed_after_log_in(client):
    response = client.post("/", {}, headers=htmx_headers("https://evil.example/steal"))
    assert urlsplit(response["HX-Redirect"]).path == "/accounts/login/"
    assert next_of(response["HX-Redirect"]) is None  # the log-in then lands on Classify


def test_a_page_without_htmx_still_gets_the_ordinary_redirect(client):
    response = client.get("/models/?q=resnet")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/models/%3Fq%3Dresnet"
    assert "HX-Redirect" not in response


# --- A stale form token (CSRF) ------------------------------------------------------------------


@pytest.fixture
def strict_client(bob) -> Client:
    """A browser whose form tokens are checked, logged in as bob, with a page open (its cookie set)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    client.get("/history/")
    return client


def test_a_stale_token_on_an_htmx_button_answers_a_short_message_to_reload(strict_client):
    response = strict_client.post("/", {}, headers={**htmx_headers(), "X-CSRFToken": "a" * 32})
    assert response.status_code == 403
    html = response.content.decode()
    assert is_fragment(html)
    assert "This page was open too long" in html and "Reload the page and try again" in html


def test_a_stale_token_in_an_ordinary_form_answers_a_styled_page_with_a_way_back(strict_client):
    response = strict_client.post(
        "/tokens/", {"name": "x", "csrfmiddlewaretoken": "a" * 32}, headers={"Referer": "http://testserver/tokens/"}
    )
    assert response.status_code == 403
    html = response.content.decode()
    assert '<header class="topbar">' in html and "Page out of date" in html
    assert "Nothing was changed" in html
    assert 'href="/tokens/"' in html  # back to the form, to reload it


def test_a_stale_token_from_another_site_links_home_not_there(strict_client):
    response = strict_client.post(
        "/tokens/", {"csrfmiddlewaretoken": "a" * 32}, headers={"Referer": "https://x.example/"}
    )
    assert 'href="https://x.example/' not in response.content.decode()


def test_a_stale_token_after_the_session_ended_sends_the_page_to_log_in(strict_client):
    strict_client.cookies.pop("sessionid")
    response = strict_client.post("/", {}, headers={**htmx_headers("http://testserver/history/"), "X-CSRFToken": "x"})
    assert next_of(response["HX-Redirect"]) == "/history/"


# --- Errors answer HTMX with a short message ----------------------------------------------------


def htmx_request(path: str = "/datasets/", method: str = "post"):
    request = getattr(RequestFactory(), method)(path, headers={"HX-Request": "true"})
    request.htmx = HtmxDetails(request)
    return request


@pytest.mark.parametrize(
    ("answer", "status", "words"),
    [
        (lambda r: views.server_error(r), 500, "unexpected error"),
        (lambda r: views.permission_denied(r), 403, "not allowed"),
        (lambda r: views.page_not_found(r), 404, "may have been deleted"),
        (lambda r: views.bad_request(r), 400, "could not be read"),
        (lambda r: busy_response(r), 503, "database is busy"),
        (lambda r: diskspace.disk_full_response(r), 507, "disk is full"),
    ],
)
def test_every_error_answers_htmx_with_a_short_message(answer, status, words, db):
    response = answer(htmx_request())
    assert response.status_code == status
    html = response.content.decode()
    assert is_fragment(html) and words in html


def test_deleting_an_image_that_is_already_gone_says_so_in_a_fragment(alice_client):
    response = alice_client.post("/datasets/images/999999/delete/", headers=htmx_headers())
    assert response.status_code == 404
    assert is_fragment(response.content.decode())


def test_the_same_errors_without_htmx_are_full_pages(bob_client):
    response = bob_client.get("/datasets/images/999999/")
    assert response.status_code == 404
    assert '<header class="topbar">' in response.content.decode()


def test_every_page_has_the_region_where_errors_js_shows_messages(bob_client):
    html = bob_client.get("/").content.decode()
    assert 'id="request-error"' in html and "js/errors.js" in html
