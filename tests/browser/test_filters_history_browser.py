"""In Chromium: filters updated in place keep their state with the Back button.

The Models filters swap the table in place and push the address (`?q=resnet`). Back must show
what the address says: the box holds the words and the table is filtered by them, whether Back
returns from another page or from a later filter of the same page.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit


def rows(page) -> list[str]:
    """The keys of the models the table lists."""
    return page.locator("table.models tbody tr[id^=model-]").evaluate_all("rows => rows.map(r => r.id.slice(6))")


def filters(url: str) -> dict[str, str]:
    """The filters an address names (the form also sends the empty ones)."""
    return {name: value for name, value in parse_qsl(urlsplit(url).query) if value}


def wait_for_filters(page, **expected: str) -> None:
    page.wait_for_url(lambda url: urlsplit(url).path == "/models/" and filters(url) == expected)
    page.wait_for_load_state("networkidle")


def filter_by_words(page, words: str) -> None:
    page.fill("#models-q", words)
    wait_for_filters(page, q=words)


def test_back_from_another_page_shows_the_filter_the_address_names(page, login, screenshot, bob):
    login("bob", "bob-password")
    page.goto("/models/")
    filter_by_words(page, "resnet")
    filtered = rows(page)
    assert filtered and all("resnet" in key for key in filtered)

    page.click("nav.mainnav >> text=Datasets")
    page.wait_for_url("**/datasets/")
    page.go_back()
    wait_for_filters(page, q="resnet")
    assert page.locator("#models-q").input_value() == "resnet"
    assert rows(page) == filtered
    screenshot("models-back-keeps-filter")


def test_back_from_a_later_filter_shows_the_earlier_one(page, login, bob):
    login("bob", "bob-password")
    page.goto("/models/")
    everything = rows(page)
    filter_by_words(page, "resnet")
    resnets = rows(page)
    assert resnets and all("resnet" in key for key in resnets)
    page.select_option("#models-family", "ResNet")
    wait_for_filters(page, q="resnet", family="ResNet")

    page.go_back()
    wait_for_filters(page, q="resnet")
    assert page.locator("#models-q").input_value() == "resnet"
    assert page.locator("#models-family").input_value() == ""
    assert rows(page) == resnets

    page.go_back()
    wait_for_filters(page)
    assert page.locator("#models-q").input_value() == ""
    assert rows(page) == everything
