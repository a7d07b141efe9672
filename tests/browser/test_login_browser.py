"""A person logs in through the real form in Chromium and lands on the Classify page."""


def test_login_with_the_form_lands_on_classify(page, login, screenshot, bob):
    login("bob", "bob-password")
    assert "/accounts/login/" not in page.url
    assert page.locator("nav.mainnav").is_visible()
    screenshot("login-landing")


def test_wrong_password_shows_a_clear_message(page, login, bob):
    login("bob", "not-the-password")
    assert page.locator(".alert-error").inner_text().startswith("Your user name and password did not match")
