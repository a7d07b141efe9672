"""Which device a training job ran on: the CPU here, a GPU on a machine with one, recorded on the job."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.test_trainer_lite import WEIGHTS_ID, _base
from tests.training_helpers import colour_png
from training import devices, trainer
from training.lite_features import LiteFeatures

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out


def test_without_a_gpu_a_job_runs_on_the_cpu_and_names_it():
    device = devices.training_device()  # this machine has no GPU
    assert device.kind == "CPU" and not device.is_gpu
    assert device.description == f"CPU: {devices.cpu_name()}, {devices.cpu_cores()} cores"


def test_the_processor_is_named_as_the_system_names_it(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC   7B13 64-Core Processor\n")
    assert devices.cpu_name(cpuinfo) == "AMD EPYC 7B13 64-Core Processor"


def test_an_unreadable_cpuinfo_is_an_unknown_processor(tmp_path):
    assert devices.cpu_name(tmp_path / "missing") == "unknown processor"


@pytest.fixture
def one_gpu(monkeypatch):
    """TensorFlow as it looks on a machine with one GPU (this machine has none)."""
    import tensorflow as tf

    gpu = SimpleNamespace(name="/physical_device:GPU:0", device_type="GPU")
    grown: list = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu] if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda device, on: grown.append((device, on)))
    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda device: {"device_name": "NVIDIA A10"})
    return grown


def test_on_a_gpu_machine_the_job_names_the_gpu_and_lets_jobs_share_its_memory(one_gpu):
    device = devices.training_device()
    assert device.is_gpu and device.description == "GPU 0: NVIDIA A10"
    assert one_gpu and one_gpu[0][1] is True  # memory as needed, not the whole card at start


def colours(folder) -> trainer.TrainData:
    """Red, green and blue pictures: 6 to train on, 2 to validate, 1 to test per label."""
    splits: dict[str, list[trainer.Example]] = {"train": [], "validation": [], "test": []}
    for label in range(3):
        for i in range(9):
            path = folder / f"{label}-{i}.png"
            path.write_bytes(colour_png(label, label * 100 + i, size=80))
            split = "train" if i < 6 else "validation" if i < 8 else "test"
            splits[split].append(trainer.Example(path, label, label * 100 + i))
    return trainer.TrainData(["red", "green", "blue"], splits["train"], splits["validation"], splits["test"])


def test_on_a_gpu_the_features_come_from_tensorflow_not_litert(one_gpu, tmp_path):
    data = colours(tmp_path)
    result = trainer.run(
        trainer.TrainConfig(epochs=2), _base(), data, tmp_path / "job",
        lite=LiteFeatures(tmp_path / "cache", WEIGHTS_ID),
    )  # fmt: skip
    assert result.strategy["device"] == "GPU 0: NVIDIA A10"
    assert result.strategy["features"] == "TensorFlow (the job runs on a GPU, faster than LiteRT on the CPU)"
