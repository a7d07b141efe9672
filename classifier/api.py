"""JSON API (placeholder until it lands)."""

from django.http import HttpRequest, JsonResponse


def predict(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": "not yet"}, status=501)


models = predict
