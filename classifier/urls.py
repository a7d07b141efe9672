from django.urls import path

from classifier import api, model_views, views

app_name = "classifier"

urlpatterns = [
    path("", views.classify, name="classify"),
    path("history/", views.history, name="history"),
    path("history/<int:pk>/delete/", views.delete_prediction, name="delete_prediction"),
    path("predictions/<int:pk>/image/", views.prediction_image, name="prediction_image"),
    path("predictions/<int:pk>/thumbnail/", views.prediction_thumbnail, name="prediction_thumbnail"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.revoke_token, name="revoke_token"),
    path("models/", model_views.models_page, name="models"),
    path("models/import/", model_views.import_weights, name="import_weights"),
    path("models/<str:key>/download/", model_views.download_weights, name="download_weights"),
    path("models/<str:key>/int8/", model_views.int8_status, name="model_int8"),
    path("models/<str:key>/int8/start/", model_views.int8_start, name="model_int8_start"),
    path("models/<str:key>/int8/switch/", model_views.int8_switch, name="model_int8_switch"),
    path("models/<str:key>/int8/cancel/", model_views.int8_cancel, name="model_int8_cancel"),
    path("api/v1/predict", api.predict, name="api_predict"),
    path("api/v1/models", api.models, name="api_models"),
]
urlpatterns += [
    path("models/<str:key>/", model_views.model_detail, name="model_detail"),
]
