"""Classify, History and API tokens pages (placeholder until they land)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def _wip(request: HttpRequest, *args, **kwargs) -> HttpResponse:
    return render(request, "error.html", {"title": "TransferLab", "message": "Being built."})


classify = history = delete_prediction = prediction_image = prediction_thumbnail = tokens = revoke_token = _wip
