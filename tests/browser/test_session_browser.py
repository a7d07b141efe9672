"""In Chromium: an HTMX button (Classify) when the session ended, the page's token is stale, the
network is down or a proxy answers 502. Never a second page inside the results, never silence.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from tests.helpers import image_bytes


def _choose_a_photo(page, tmp_path) -> None:
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(image_bytes("JPEG", size=(160, 120)))
    page.set_input_files("input[name=images]", str(photo))


def _classify(page) -> None:
    page.click("#classify-form button[type=submit]")


def test_after_logging_out_in_another_tab_classify_goes_to_log_in_and_comes_back(
    page, login, screenshot, bob, fast_model, tmp_path
):
    login("bob", "bob-password")
    page.goto("/")
    other_tab = page.context.new_page()
    other_tab.goto("/history/")
    other_tab.click("nav.usernav button[type=submit]")  # Log out
    other_tab.wait_for_url("**/accounts/login/")
    other_tab.close()

    _choose_a_photo(page, tmp_path)
    _classify(page)
    page.wait_for_url(lambda url: "/accounts/login/" in url)
    assert parse_qs(urlsplit(page.url).query)["next"] == ["/"]
    assert page.locator("header.topbar").count() == 1
    assert page.locator("#results").count() == 0  # the whole page went, not a login form in the results
    screenshot("session-ended-login")

    page.fill("#id_username", "bob")
    page.fill("#id_password", "bob-password")
    page.click("main button[type=submit]")
    page.wait_for_url(lambda url: url.endswith("/") and "/accounts/" not in url)
    assert page.locator("#classify-form").is_visible()


def test_a_stale_form_token_says_to_reload_in_place(page, login, screenshot, live_server, bob, fast_model, tmp_path):
    login("bob", "bob-password")
    page.goto("/")
    # Logged in again in another tab: the cookie has a new token, this page still sends the old one.
    page.context.add_cookies([{"name": "csrftoken", "value": "x" * 32, "url": live_server.url}])
    _choose_a_photo(page, tmp_path)
    _classify(page)

    message = page.locator("#request-error")
    message.wait_for(state="visible")
    assert "This page was open too long" in message.inner_text()
    assert page.locator("#request-error a", has_text="Reload the page").is_visible()
    assert page.locator("header.topbar").count() == 1 and page.locator("#results .card").count() == 0
    assert page.locator("#classify-form button[type=submit]").is_enabled()  # ready to try again
    screenshot("stale-token-message")

    page.click("#request-error a")  # reload: a fresh token, and Classify works again
    _choose_a_photo(page, tmp_path)
    _classify(page)
    page.wait_for_selector("[data-testid=result]")
    assert page.locator("#request-error").is_hidden()


def test_network_down_and_a_proxy_error_are_said_in_place(page, login, screenshot, bob, fast_model, tmp_path):
    login("bob", "bob-password")
    page.goto("/")
    _choose_a_photo(page, tmp_path)
    message = page.locator("#request-error")

    page.route("**/*", lambda route: route.abort() if route.request.method == "POST" else route.continue_())
    _classify(page)
    message.wait_for(state="visible")
    assert "TransferLab could not be reached" in message.inner_text()
    screenshot("network-down-message")

    page.unroute("**/*")
    _classify(page)  # the network is back: results, and the message goes
    page.wait_for_selector("[data-testid=result]")
    assert message.is_hidden()

    page.route(
        "**/*",
        lambda route: (
            route.fulfill(status=502, content_type="text/html", body="<html><h1>Bad Gateway</h1></html>")
            if route.request.method == "POST"
            else route.continue_()
        ),
    )
    _classify(page)
    message.wait_for(state="visible")
    assert "The server could not answer (error 502)" in message.inner_text()
    assert "Bad Gateway" not in page.locator("main").inner_text()
    assert page.locator("[data-testid=result]").count() > 0  # the earlier results stay
    screenshot("proxy-error-message")
    page.click("#request-error button")  # Dismiss
    assert message.is_hidden()
