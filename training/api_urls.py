"""URLs of the training JSON API (`/api/v1/jobs`), included by webapp.urls."""

from django.urls import path

from training import api

app_name = "training_api"

urlpatterns = [
    path("jobs", api.job_list, name="jobs"),
    path("jobs/<int:pk>", api.job_detail, name="job"),
    path("jobs/<int:pk>/cancel", api.job_cancel, name="job_cancel"),
]
