"""The project starts: pages need a login, the login page renders without any CDN asset."""


def test_pages_require_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_login_page_uses_only_local_assets(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Log in" in html
    assert "htmx" in html and "/static/django_htmx/" in html
    assert "cdn" not in html.lower() and "unpkg" not in html


def test_login_page_says_what_transferlab_does_in_plain_words(client):
    html = client.get("/accounts/login/").content.decode()
    assert (
        "Classify photos with pretrained ImageNet models, or train a model of your own on labelled images. "
        "Everything runs on this server." in html
    )
    assert "trained models" not in html


def test_template_comments_do_not_show_on_the_page(bob_client):
    html = bob_client.get("/").content.decode()
    assert "{#" not in html and "#}" not in html and "{%" not in html
