"""Admin pages of the inference app render for staff and never show a token's secret."""

from classifier.models import ApiToken
from tests.test_history_views import make_prediction


def test_prediction_admin_lists_with_thumbnail_and_best_guess(staff_client, bob):
    p = make_prediction(bob, "zebra.jpg")
    html = staff_client.get("/admin/classifier/prediction/").text
    assert "zebra.jpg" in html and "zebra (90%)" in html
    assert f"/predictions/{p.pk}/thumbnail/" in html
    assert staff_client.get(f"/admin/classifier/prediction/{p.pk}/change/").status_code == 200


def test_token_admin_never_shows_the_hash(staff_client, bob):
    token, key = ApiToken.issue(bob, "script")
    html = staff_client.get(f"/admin/classifier/apitoken/{token.pk}/change/").text
    assert "script" in html and token.key_hash not in html and key not in html


def test_members_cannot_open_the_admin(bob_client):
    assert bob_client.get("/admin/").status_code == 302


def test_weights_downloads_are_listed_read_only(staff_client):
    from classifier.models import WeightsDownload

    WeightsDownload.objects.create(model_key="vgg16", status="failed", message="no internet")
    html = staff_client.get("/admin/classifier/weightsdownload/").text
    assert "vgg16" in html
    assert staff_client.get("/admin/classifier/weightsdownload/add/").status_code == 403
