"""API tokens page: create (shown once), list, revoke; only a hash is stored."""

from classifier.models import ApiToken


def test_creating_a_token_shows_it_once_and_stores_only_its_hash(bob_client, bob):
    response = bob_client.post("/tokens/", {"name": "sorting script"})
    assert response.status_code == 200
    token = ApiToken.objects.get(user=bob)
    key = response.context["new_key"]
    assert key.startswith("tl_") and key in response.text
    assert token.key_hash == ApiToken.hash(key) and key not in token.key_hash
    assert "shown only once" in response.text
    assert key not in bob_client.get("/tokens/").text


def test_token_needs_a_name(bob_client):
    response = bob_client.post("/tokens/", {"name": "  "})
    assert "This field is required." in response.text
    assert not ApiToken.objects.exists()


def test_revoking_a_token_deletes_it(bob_client, bob):
    token, _ = ApiToken.issue(bob, "old")
    response = bob_client.post(f"/tokens/{token.pk}/revoke/", follow=True)
    assert "Revoked the token “old”." in response.text
    assert not ApiToken.objects.exists()


def test_nobody_else_can_revoke_my_token(client, bob, charlie):
    token, _ = ApiToken.issue(bob, "mine")
    client.force_login(charlie)
    assert client.post(f"/tokens/{token.pk}/revoke/").status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_token_list_shows_only_my_tokens(bob_client, bob, charlie):
    ApiToken.issue(bob, "bob's script")
    ApiToken.issue(charlie, "charlie's script")
    html = bob_client.get("/tokens/").text
    assert "bob&#x27;s script" in html and "charlie" not in html


def curl_example(html: str) -> str:
    return html.split('id="curl-example"')[1].split("</pre>")[0]


def test_the_curl_example_names_the_model_this_user_would_get_by_default(bob_client, fast_model):
    example = curl_example(bob_client.get("/tokens/").text)
    assert '-F "model=mobilenet-0.5-128"' in example
    assert "http://testserver/api/v1/predict" in example


def test_without_an_installed_model_the_curl_example_names_none(bob_client):
    example = curl_example(bob_client.get("/tokens/").text)
    assert "model=" not in example and '-F "images=@photo.jpg"' in example


def test_the_new_token_and_the_example_have_copy_buttons_without_inline_script(bob_client):
    html = bob_client.post("/tokens/", {"name": "script"}).text
    assert '<button type="button" class="button small copy-button" data-copy="new-token" hidden>Copy</button>' in html
    assert 'data-copy="curl-example"' in html
    assert "onclick" not in html and "<script>" not in html
