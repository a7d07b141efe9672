"""Download requests as rows a worker claims: one at a time, re-runs harmless, crashes recorded."""

from __future__ import annotations

import os
import socket
import time

import pytest
from django.utils import timezone

from classifier import installs, tasks, weights, zoo
from classifier.models import WeightsDownload
from webapp import background
from webapp import tasks as webapp_tasks

pytestmark = pytest.mark.django_db


def test_a_request_is_queued_once_and_a_second_click_finds_the_first(staff, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks, "download_weights", sent.append)
    model = zoo.get("mobilenetv2")
    first, created = installs.request_download(model, True, staff)
    again, created_again = installs.request_download(model, True, staff)
    assert created and not created_again and again.pk == first.pk
    other, created_other = installs.request_download(model, False, staff)  # the other file is its own download
    assert created_other and other.pk != first.pk
    assert WeightsDownload.objects.filter(status=WeightsDownload.Status.QUEUED).count() == 2


def test_the_task_is_sent_after_the_row_commits(staff, offline, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        download, _ = installs.request_download(zoo.get("mobilenetv2"), True, staff)
    assert len(callbacks) == 1
    download.refresh_from_db()
    assert download.status == WeightsDownload.Status.FAILED
    assert download.message.startswith("Could not download mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5")
    assert download.started_at and download.finished_at


def test_running_a_download_twice_does_the_work_once(offline):
    download = WeightsDownload.objects.create(model_key="mobilenetv2")
    assert installs.run_download(download.pk).status == WeightsDownload.Status.FAILED
    assert installs.run_download(download.pk) is None


def test_an_unexpected_error_is_recorded_without_a_traceback_for_the_user(monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(weights, "download", explode)
    download = WeightsDownload.objects.create(model_key="mobilenetv2")
    done = installs.run_download(download.pk)
    assert done.status == WeightsDownload.Status.FAILED
    assert "unexpected error" in done.message and "disk on fire" not in done.message


def test_a_download_for_a_model_no_longer_in_the_zoo_fails_in_words():
    download = WeightsDownload.objects.create(model_key="retired-model")
    assert installs.run_download(download.pk).message.startswith("Unknown model 'retired-model'")


def test_a_starting_worker_marks_downloads_of_a_dead_worker_as_interrupted():
    stale = WeightsDownload.objects.create(
        model_key="resnet50", status=WeightsDownload.Status.RUNNING, worker=f"{socket.gethostname()}:999999999:gone"
    )
    queued = WeightsDownload.objects.create(model_key="vgg16")
    webapp_tasks.recover_jobs_on_startup()
    stale.refresh_from_db()
    queued.refresh_from_db()
    assert stale.status == WeightsDownload.Status.INTERRUPTED and "worker stopped" in stale.message
    assert queued.status == WeightsDownload.Status.QUEUED


def test_a_starting_worker_leaves_another_live_workers_download_alone():
    """Two consumers: the second one starting must not fail the first one's download."""
    live = WeightsDownload.objects.create(
        model_key="resnet50",
        status=WeightsDownload.Status.RUNNING,
        worker=f"{socket.gethostname()}:{os.getppid()}:other",
        heartbeat_at=timezone.now(),
    )
    elsewhere = WeightsDownload.objects.create(
        model_key="vgg16", status=WeightsDownload.Status.RUNNING, worker="gpu-box:42:abc", heartbeat_at=timezone.now()
    )
    webapp_tasks.recover_jobs_on_startup()
    assert set(WeightsDownload.objects.values_list("status", flat=True)) == {WeightsDownload.Status.RUNNING}
    assert {live.pk, elsewhere.pk} == set(WeightsDownload.objects.values_list("pk", flat=True))


@pytest.mark.django_db(transaction=True)  # the heartbeat thread writes through its own connection
def test_a_download_keeps_its_heartbeat_while_the_file_arrives(monkeypatch):
    beats = []

    def slow_download(*args, **kwargs):
        for _ in range(3):
            time.sleep(0.05)
            beats.append(WeightsDownload.objects.get().heartbeat_at)
        raise weights.WeightsError("offline")

    monkeypatch.setattr(background, "HEARTBEAT_EVERY", 0.02)
    monkeypatch.setattr(weights, "download", slow_download)
    download = WeightsDownload.objects.create(model_key="mobilenetv2")
    assert installs.run_download(download.pk).status == WeightsDownload.Status.FAILED
    assert beats[0] < beats[-1]


def test_latest_downloads_keeps_the_newest_per_file():
    WeightsDownload.objects.create(model_key="resnet50", status=WeightsDownload.Status.FAILED)
    newest = WeightsDownload.objects.create(model_key="resnet50")
    WeightsDownload.objects.create(model_key="resnet50", include_top=False, status=WeightsDownload.Status.SUCCEEDED)
    latest = installs.latest_downloads()
    assert latest[("resnet50", True)].pk == newest.pk
    assert latest[("resnet50", False)].status == WeightsDownload.Status.SUCCEEDED
