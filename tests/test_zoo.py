"""The registry: every entry consistent, facts taken from the installed Keras, every architecture builds.

The build test constructs each distinct architecture once (entries that differ only in input
size share one), with weights=None at the smallest input the family accepts, and checks it
against the layout shipped in classifier/data/zoo_facts.json that weights recognition relies on.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

from classifier import zoo
from classifier.layouts import count_macs, model_layout

pytestmark = pytest.mark.storage_free  # neither database nor queue: the PostgreSQL run leaves it out

ALL = zoo.all_models()


def _one_per_architecture() -> list[zoo.ZooModel]:
    seen: dict[tuple, zoo.ZooModel] = {}
    for model in ALL:
        seen.setdefault(model.architecture, model)
    return list(seen.values())


ARCHITECTURES = _one_per_architecture()


def test_every_key_name_and_weights_file_name_is_unique():
    keys = [m.key for m in ALL]
    assert len(keys) == len(set(keys))
    files = [wf.filename for m in ALL for wf in (m.top, m.notop) if wf]
    assert len(files) == len(set(files)) == 2 * len(ALL)
    url_names = [wf.url_name for m in ALL for wf in (m.top, m.notop)]
    assert len(url_names) == len(set(url_names))


def test_every_name_users_can_type_finds_its_own_entry():
    for model in ALL:
        for name in (model.key, model.name, *model.aliases, model.name.upper(), f"  {model.key}  "):
            assert zoo.get(name).key == model.key, name
    # No two entries share a name: every accepted name leads back to the entry that owns it.
    owners = {name.lower(): m.key for m in ALL for name in (m.key, m.name, *m.aliases)}
    assert zoo.lookup_names() == owners


def test_unknown_name_says_what_to_do():
    with pytest.raises(zoo.UnknownModel) as info:
        zoo.get("resnet9000")
    assert "Unknown model 'resnet9000'" in str(info.value)
    assert "mobilenetv2" in str(info.value) and "Models page" in str(info.value)


def test_the_guides_six_come_first_and_are_the_only_recommended():
    six = ["mobilenetv2", "resnet50", "efficientnetb0", "efficientnetb7", "vgg16", "inceptionv3"]
    assert [m.key for m in ALL[:6]] == six
    assert zoo.recommended_keys() == six
    assert not any(m.recommended for m in ALL[6:])
    guide = {m.key: (m.size_mb, m.speed, m.accuracy) for m in ALL[:6]}
    assert guide["mobilenetv2"] == (14, "very fast", "medium")
    assert guide["efficientnetb7"] == (256, "slow", "very high")
    assert guide["vgg16"] == (528, "slow", "medium")


def test_every_image_classification_family_of_keras_applications_is_in_the_zoo():
    from keras import applications

    constructors = {
        name for name, value in vars(applications).items() if name[0].isupper() and inspect.isfunction(value)
    }
    assert constructors == {m.constructor for m in ALL}


def test_mobilenet_variants_are_those_keras_publishes_weights_for():
    v1 = {dict(m.options)["alpha"]: set() for m in ALL if m.family == "MobileNet"}
    for m in ALL:
        if m.family == "MobileNet":
            v1[dict(m.options)["alpha"]].add(m.input_size)
    assert v1 == {alpha: {128, 160, 192, 224} for alpha in (0.25, 0.5, 0.75, 1.0)}

    v2 = {(dict(m.options)["alpha"], m.input_size) for m in ALL if m.family == "MobileNetV2"}
    assert v2 == {(a, r) for a in (0.35, 0.5, 0.75, 1.0) for r in (96, 128, 160, 192, 224)} | {(1.3, 224), (1.4, 224)}

    v3 = {
        (m.constructor, dict(m.options)["alpha"], dict(m.options)["minimalistic"])
        for m in ALL
        if m.family == "MobileNetV3"
    }
    assert v3 == {
        (f"MobileNetV3{size}", alpha, minimal)
        for size in ("Small", "Large")
        for alpha, minimal in ((1.0, False), (0.75, False), (1.0, True))
    }
    assert zoo.get("mobilenet-0.25-128").name == "MobileNet 0.25 @128"
    assert zoo.get("mobilenetv2-0.35-96").name == "MobileNetV2 0.35 @96"
    assert zoo.get("MobileNetV3Small minimalistic").key == "mobilenetv3small-minimalistic"


def test_file_names_urls_and_hashes_are_the_ones_in_the_installed_keras():
    from keras.src.applications import convnext, efficientnet, efficientnet_v2, mobilenet_v3, resnet

    for m in ALL:
        for wf in (m.top, m.notop):
            assert wf.url.startswith("https://storage.googleapis.com/"), wf.url
            assert wf.url_name.endswith(".h5")
    for key in ("resnet50", "resnet101", "resnet152", "resnet50v2", "resnet101v2", "resnet152v2"):
        model = zoo.get(key)
        assert (model.top.file_hash, model.notop.file_hash) == resnet.WEIGHTS_HASHES[key]
        assert model.top.url == f"{resnet.BASE_WEIGHTS_PATH}{key}_weights_tf_dim_ordering_tf_kernels.h5"
    for n in range(8):
        model = zoo.get(f"efficientnetb{n}")
        assert (model.top.file_hash, model.notop.file_hash) == efficientnet.WEIGHTS_HASHES[f"b{n}"]
        assert model.notop.url == f"{efficientnet.BASE_WEIGHTS_PATH}efficientnetb{n}_notop.h5"
    for variant, weights_name in (("b0", "b0"), ("b3", "b3"), ("s", "-s"), ("m", "-m"), ("l", "-l")):
        model = zoo.get(f"efficientnetv2{variant}")
        assert (model.top.file_hash, model.notop.file_hash) == efficientnet_v2.WEIGHTS_HASHES[weights_name]
        assert model.top.url == f"{efficientnet_v2.BASE_WEIGHTS_PATH}efficientnetv2-{variant}.h5"
    for variant in ("tiny", "small", "base", "large", "xlarge"):
        model = zoo.get(f"convnext_{variant}")
        assert (model.top.file_hash, model.notop.file_hash) == convnext.WEIGHTS_HASHES[f"convnext_{variant}"]
        assert model.top.hash_algorithm == "sha256"
        assert model.notop.url == f"{convnext.BASE_WEIGHTS_PATH}convnext_{variant}_notop.h5"
    small = zoo.get("mobilenetv3small-minimalistic")
    assert small.notop.url == (
        mobilenet_v3.BASE_WEIGHT_PATH + "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5"
    )
    assert (small.top.file_hash, small.notop.file_hash) == mobilenet_v3.WEIGHTS_HASHES[
        "small_minimalistic_224_1.0_float"
    ]
    nasnet = zoo.get("nasnetmobile")  # Keras keeps it as nasnet_mobile.h5, the URL says NASNet-mobile.h5
    assert (nasnet.top.filename, nasnet.top.url_name) == ("nasnet_mobile.h5", "NASNet-mobile.h5")
    assert zoo.get("mobilenetv2-0.5-96").top.filename == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_96.h5"
    assert zoo.get("mobilenet-0.75-160").notop.filename == "mobilenet_7_5_160_tf_no_top.h5"


def test_published_numbers_are_plausible_and_unknown_ones_stay_empty():
    for m in ALL:
        assert m.top1 is None or 40 < m.top1 < 90, m.key
        assert m.top5 is None or (m.top1 is not None and m.top1 < m.top5 < 100), m.key
        assert m.size_mb and m.size_mb > 0 and m.parameters_m and m.macs_m, m.key
        assert m.speed in zoo.SPEEDS and m.accuracy in zoo.ACCURACIES, m.key
        assert m.use
    # Nobody published top-5 for these: the registry says so instead of guessing.
    assert zoo.get("convnexttiny").top5 is None and zoo.get("mobilenetv3large").top5 is None
    assert zoo.get("mobilenetv2-0.35-96").top1 == 45.5 and zoo.get("mobilenetv2-1.4-224").top5 == 92.5


def test_counted_facts_agree_with_published_tables():
    """Parameters and multiply-accumulates are counted by make_zoo_facts.py: compare with what papers list."""
    assert zoo.get("resnet50").parameters_m == 25.64  # keras.io: 25,636,712
    assert zoo.get("vgg16").parameters_m == 138.36
    assert zoo.get("mobilenetv2").macs_m == pytest.approx(300, rel=0.02)  # TF-slim: 300 M MACs
    assert zoo.get("mobilenet-0.25-128").macs_m == pytest.approx(14, rel=0.05)  # TF-slim: 14 M
    assert zoo.get("mobilenetv3large").macs_m == pytest.approx(217, rel=0.02)  # TF-slim: 217 M
    assert zoo.get("mobilenet-0.25-128").size_estimated and not zoo.get("resnet50").size_estimated


def test_the_facts_file_covers_exactly_the_registry():
    assert set(zoo._FACTS) == set(zoo.MODELS)
    for model in ALL:
        assert model.layout(True)["digest"] and model.layout(False)["digest"]
        # The head adds layers; entries sharing an architecture share both layouts.
        assert model.layout(True)["layers"] > model.layout(False)["layers"]


@pytest.mark.parametrize("model", ARCHITECTURES, ids=[m.key for m in ARCHITECTURES])
def test_every_architecture_builds_small_and_matches_its_recorded_layout(model):
    import keras

    size = model.input_size if model.top_needs_input_size else model.min_input_size
    built = model.build(weights=None, include_top=True, input_size=size)
    try:
        assert tuple(built.output.shape) == (None, 1000)
        layout = model_layout(built)
        assert layout.digest == model.layout(True)["digest"]
        assert layout.parameters == zoo._FACTS[model.key]["parameters"]
        assert count_macs(built) > 0
        batch = np.random.default_rng(0).integers(0, 256, size=(2, size, size, 3), dtype=np.uint8)
        x = model.preprocess(batch)
        assert x.shape == batch.shape and np.isfinite(x).all()
        assert batch.dtype == np.uint8  # preprocessing works on a copy
        importlib.import_module(f"keras.applications.{model.preprocess_module}")
    finally:
        del built
        keras.backend.clear_session()


# What keras.applications downloads with; the registry must refuse it rather than reach the network.
KERAS_DOWNLOAD_REQUEST = "imagenet"


def test_build_refuses_imagenet_downloads_and_too_small_inputs():
    model = zoo.get("inceptionv3")
    with pytest.raises(ValueError, match="local weights file"):
        model.build(weights=KERAS_DOWNLOAD_REQUEST)
    with pytest.raises(ValueError, match="at least 75 pixels"):
        model.build(weights=None, input_size=32)
