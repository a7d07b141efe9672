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
