"""Datasets pages (placeholder until they land)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def dataset_list(request: HttpRequest) -> HttpResponse:
    return render(request, "error.html", {"title": "Datasets", "message": "Being built."})
