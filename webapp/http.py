"""Request typing shared by the views of both apps."""

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    """For type hints: django-htmx's middleware sets request.htmx on every request."""

    htmx: HtmxDetails
