"""Models page and weights installation (placeholder until the Models page lands)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def models_page(request: HttpRequest) -> HttpResponse:
    return render(request, "error.html", {"title": "Models", "message": "Being built."})


def import_weights(request: HttpRequest) -> HttpResponse:
    return render(request, "error.html", {"title": "Models", "message": "Being built."})


def download_weights(request: HttpRequest, key: str) -> HttpResponse:
    return render(request, "error.html", {"title": "Models", "message": "Being built."})
