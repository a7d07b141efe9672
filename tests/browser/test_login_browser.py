"""A person logs in through the real form in Chromium and lands on the Classify page."""


def test_login_with_the_form_lands_on_classify(page, login, screenshot, bob):
    login("bob", "bob-password")
    assert "/accounts/login/" not in page.url
    assert page.locator("nav.mainnav").is_visible()
    screenshot("login-landing")


def test_wrong_password_shows_a_clear_message(page, login, bob):
    login("bob", "not-the-password")
    assert page.locator(".alert-error").inner_text().startswith("Your user name and password did not match")


def test_change_password_from_the_account_menu(page, login, screenshot, bob):
    login("bob", "bob-password")
    page.click("nav.usernav >> text=Change password")
    page.wait_for_url("**/accounts/password/")
    assert page.locator("#id_old_password").evaluate("e => e === document.activeElement")
    screenshot("password-change")

    page.fill("#id_old_password", "not-my-password")
    page.fill("#id_new_password1", "a-much-longer-passphrase-7")
    page.fill("#id_new_password2", "a-much-longer-passphrase-7")
    page.click("main button[type=submit]")
    error = page.locator(".field:has(#id_old_password) .errorlist")
    assert "Your old password was entered incorrectly" in error.inner_text()
    assert page.locator("#id_new_password1").input_value() == ""  # passwords are never sent back
    screenshot("password-change-refused")

    page.fill("#id_old_password", "bob-password")
    page.fill("#id_new_password1", "a-much-longer-passphrase-7")
    page.fill("#id_new_password2", "a-much-longer-passphrase-7")
    page.click("main button[type=submit]")
    page.wait_for_url("**/accounts/password/done/")
    assert page.locator("h1").inner_text() == "Password changed"
    screenshot("password-changed")

    page.click("nav.usernav button[type=submit]")  # log out, and in again with the new password
    login("bob", "a-much-longer-passphrase-7")
    assert page.locator("nav.mainnav").is_visible()
