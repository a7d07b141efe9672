"""Anyone logged in can change their password from the account menu, on a page styled like the others."""

from __future__ import annotations

import re

from django.test import Client

NEW = "a-much-longer-passphrase-7"


def test_the_account_menu_links_to_change_password(bob_client):
    html = bob_client.get("/history/").content.decode()
    nav = re.search(r'<nav class="usernav".*?</nav>', html, re.S).group(0)
    assert '<a href="/accounts/password/">Change password</a>' in nav


def test_the_page_is_a_card_with_labelled_fields_and_the_rules_for_a_new_password(bob_client):
    response = bob_client.get("/accounts/password/")
    html = response.content.decode()
    assert response.status_code == 200
    assert '<section class="card narrow' in html and html.count('<div class="field">') == 3
    assert '<label for="id_old_password">Old password</label>' in html
    assert 'id="id_new_password1_helptext"' in html and "at least 8 characters" in html
    assert 'aria-current="page">Change password</a>' in html


def test_a_wrong_old_password_is_refused_with_400_and_says_so_at_its_field(bob_client):
    response = bob_client.post(
        "/accounts/password/", {"old_password": "wrong", "new_password1": NEW, "new_password2": NEW}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(r'id="id_old_password".*?<ul class="errorlist"[^>]*><li>Your old password was entered', html, re.S)


def test_a_new_password_that_breaks_the_rules_is_refused_with_the_rule(bob_client):
    response = bob_client.post(
        "/accounts/password/", {"old_password": "bob-password", "new_password1": "123", "new_password2": "123"}
    )
    assert response.status_code == 400
    assert "This password is too short" in response.content.decode()


def test_a_changed_password_keeps_this_session_logs_out_the_others_and_works_at_the_next_log_in(bob_client, bob):
    elsewhere = Client()
    elsewhere.force_login(bob)
    response = bob_client.post(
        "/accounts/password/", {"old_password": "bob-password", "new_password1": NEW, "new_password2": NEW}
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/password/done/"
    done = bob_client.get("/accounts/password/done/").content.decode()
    assert '<section class="card narrow' in done and "Your password is changed" in done
    assert bob_client.get("/history/").status_code == 200  # still logged in here
    assert elsewhere.get("/history/").status_code == 302  # another browser asks for the new password
    other_browser = Client()
    assert other_browser.post("/accounts/login/", {"username": "bob", "password": NEW}).status_code == 302
