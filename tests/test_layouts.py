"""Reading what a weights file holds without TensorFlow, and what a built model would save."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from classifier import zoo
from classifier.layouts import LayoutError, count_macs, model_layout, read_layout

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out


def test_a_generated_file_reads_back_as_the_layout_of_its_model(weights_file):
    layout = read_layout(weights_file("mobilenet-0.5-128"))
    expected = zoo.get("mobilenet-0.5-128").layout(True)
    assert layout.summary() == expected
    assert layout.head_classes == 1000
    assert layout.layers[0].name == "conv1" and layout.layers[0].shapes == ((3, 3, 3, 16),)


def test_a_file_without_head_has_no_head_classes(weights_file):
    layout = read_layout(weights_file("mobilenet-0.5-128", include_top=False))
    assert layout.head_classes is None
    assert layout.digest == zoo.get("mobilenet-0.5-224").layout(False)["digest"]  # same shapes at any size


def test_long_layer_lists_split_over_several_attributes_are_read_whole(tmp_path):
    """Keras splits attributes over 64 KB into layer_names0, layer_names1... (big models)."""
    path = tmp_path / "split.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names0"] = [b"dense_a"]
        f.attrs["layer_names1"] = [b"dense_b"]
        for name, shape in (("dense_a", (4, 3)), ("dense_b", (3, 2))):
            group = f.create_group(name)
            group.attrs["weight_names"] = [f"{name}/kernel:0".encode()]
            group.create_dataset(f"{name}/kernel:0", data=np.zeros(shape, dtype="float32"))
    layout = read_layout(path)
    assert [layer.name for layer in layout.layers] == ["dense_a", "dense_b"]
    assert layout.parameters == 18 and layout.head_classes == 2


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "not an HDF5 file"),
        (b"<html>404 Not Found</html>", "not an HDF5 file"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "not an HDF5 file"),
    ],
)
def test_files_that_are_not_hdf5_say_so(tmp_path, content, words):
    path = tmp_path / "weights.h5"
    path.write_bytes(content)
    with pytest.raises(LayoutError, match=words):
        read_layout(path)


def test_a_truncated_download_is_called_damaged_or_incomplete(tmp_path, weights_file):
    data = weights_file("mobilenet-0.5-128").read_bytes()
    path = tmp_path / "half.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LayoutError, match="damaged or incomplete"):
        read_layout(path)


def test_hdf5_without_keras_layers_and_keras_3_files_are_told_apart(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    with pytest.raises(LayoutError, match="not a Keras weights file"):
        read_layout(plain)

    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    modern = tmp_path / "model.weights.h5"
    model.save_weights(modern)
    with pytest.raises(LayoutError, match="Keras 3 weights file"):
        read_layout(modern)


def test_count_macs_counts_convolutions_and_dense_layers():
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),  # 8*8*4 outputs x 3*3*3
            keras.layers.DepthwiseConv2D(3, padding="same"),  # 8*8*4 x 3*3
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5),  # 4 x 5
        ]
    )
    assert count_macs(model) == 8 * 8 * 4 * 27 + 8 * 8 * 4 * 9 + 20
    assert len(model_layout(model).layers) == 3
