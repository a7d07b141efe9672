from django.urls import path

from training import job_views, views

app_name = "training"

urlpatterns = [
    path("", views.dataset_list, name="dataset_list"),
    path("new/", views.dataset_create, name="dataset_create"),
    path("<int:pk>/", views.dataset_detail, name="dataset_detail"),
    path("<int:pk>/edit/", views.dataset_edit, name="dataset_edit"),
    path("<int:pk>/delete/", views.dataset_delete, name="dataset_delete"),
    path("<int:pk>/splits/", views.redraw_splits, name="redraw_splits"),
    path("<int:pk>/export/", views.export_dataset, name="export_dataset"),
    path("<int:pk>/labels/new/", views.label_create, name="label_create"),
    path("<int:pk>/labels/<int:label_pk>/edit/", views.label_edit, name="label_edit"),
    path("<int:pk>/labels/<int:label_pk>/delete/", views.label_delete, name="label_delete"),
    path("<int:pk>/upload/", views.upload_images, name="upload_images"),
    path("<int:pk>/import/", views.import_zip, name="import_zip"),
    path("<int:pk>/imports/<int:job_pk>/", views.import_detail, name="import_detail"),
    path("<int:pk>/imports/<int:job_pk>/cancel/", views.import_cancel, name="import_cancel"),
    path("<int:pk>/train/", job_views.train, name="train"),
    path("jobs/", job_views.job_list, name="job_list"),
    path("jobs/compare/", job_views.job_compare, name="job_compare"),
    path("jobs/<int:pk>/", job_views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/progress/", job_views.job_progress, name="job_progress"),
    path("jobs/<int:pk>/cancel/", job_views.job_cancel, name="job_cancel"),
    path("jobs/<int:pk>/again/", job_views.job_again, name="job_again"),
    path("jobs/<int:pk>/delete/", job_views.job_delete, name="job_delete"),
    path("jobs/<int:pk>/exports/<str:fmt>/", job_views.job_export, name="job_export"),
    path("jobs/<int:pk>/int8/", job_views.job_int8, name="job_int8"),
    path("jobs/<int:pk>/int8/start/", job_views.job_int8_start, name="job_int8_start"),
    path("jobs/<int:pk>/int8/switch/", job_views.job_int8_switch, name="job_int8_switch"),
    path("jobs/<int:pk>/int8/cancel/", job_views.job_int8_cancel, name="job_int8_cancel"),
    path("images/<int:pk>/", views.image_detail, name="image_detail"),
    path("images/<int:pk>/thumbnail/", views.image_thumbnail, name="image_thumbnail"),
    path("images/<int:pk>/original/", views.image_original, name="image_original"),
    path("images/<int:pk>/update/", views.image_update, name="image_update"),
    path("images/<int:pk>/delete/", views.image_delete, name="image_delete"),
]
