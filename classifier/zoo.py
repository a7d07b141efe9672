"""The registry of pretrained ImageNet models: every fact about a model is written here once.

Plain Python, no Django. Keras is imported only when a model is built or preprocessing runs, so
pages that list the zoo never pay for importing TensorFlow. Adding a model is adding one entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_APPS_ALT = "https://storage.googleapis.com/keras-applications/"


@dataclass(frozen=True)
class WeightsFile:
    """One published Keras weights file: its exact file name, where Keras downloads it, its hash.

    `file_hash` is what `keras.utils.get_file` checks (md5 or sha256, by length); None when Keras
    publishes no hash for the file.
    """

    filename: str
    url: str
    file_hash: str | None = None


@dataclass(frozen=True)
class ZooModel:
    """A pretrained model as users pick it: one architecture at one width and input size."""

    key: str  # what users type in the API and what URLs carry: "mobilenetv2", "mobilenet-0.25-128"
    name: str  # what pages show: "MobileNetV2", "MobileNet 0.25 @128"
    family: str  # groups variants in the Models table: "MobileNet", "EfficientNet"
    constructor: str  # attribute of keras.applications
    preprocess_module: str  # keras.applications submodule whose preprocess_input matches
    input_size: int
    top: WeightsFile  # with the 1000-class ImageNet head: what Classify uses
    notop: WeightsFile | None  # feature extractor only: what training will use
    size_mb: float  # size of the with-top weights file
    parameters_m: float  # millions of parameters, with top
    top1: float | None  # published ImageNet top-1 accuracy, percent
    top5: float | None
    speed: str  # words from the reference guide: "very fast" ... "slow"
    accuracy: str  # "medium" ... "very high"
    use: str
    recommended: bool = False  # the reference guide's six, listed first
    options: tuple[tuple[str, Any], ...] = ()  # extra constructor arguments (alpha=...)
    min_input_size: int = 32  # smallest input the architecture accepts (for small test builds)
    aliases: tuple[str, ...] = field(default=())

    def build(self, weights: str | Path | None = None, *, include_top: bool = True, input_size: int | None = None):
        """Construct the Keras model, loading weights from a local file (never 'imagenet').

        Keras's constructor loads legacy `.h5` application weights by their file name.
        """
        if weights == "imagenet":
            raise ValueError("Pass a local weights file; downloads go through classifier.weights.")
        from keras import applications

        size = input_size or self.input_size
        if size < self.min_input_size:
            raise ValueError(f"{self.name} needs an input of at least {self.min_input_size} pixels, not {size}.")
        constructor = getattr(applications, self.constructor)
        return constructor(
            weights=str(weights) if weights is not None else None,
            include_top=include_top,
            input_shape=(size, size, 3),
            **dict(self.options),
        )

    def preprocess(self, batch: np.ndarray) -> np.ndarray:
        """Apply the family's own preprocess_input to a uint8 or float batch (returns a new array)."""
        module = importlib.import_module(f"keras.applications.{self.preprocess_module}")
        return module.preprocess_input(np.array(batch, dtype=np.float32, copy=True))

    def weights_file(self, include_top: bool = True) -> WeightsFile | None:
        return self.top if include_top else self.notop


def _published(base_url: str, filename: str, hashes: dict[str, str]) -> WeightsFile:
    return WeightsFile(filename, base_url + filename, hashes.get(filename))


def _mobilenet(alpha: float, rows: int, top1: float, top5: float, params_m: float) -> ZooModel:
    alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
    base = KERAS_APPS + "mobilenet/"
    default = alpha == 1.0 and rows == 224
    return ZooModel(
        key=f"mobilenet-{alpha:g}-{rows}".replace("-1-", "-1.0-"),
        name=f"MobileNet {alpha:g} @{rows}",
        family="MobileNet",
        constructor="MobileNet",
        preprocess_module="mobilenet",
        input_size=rows,
        options=(("alpha", alpha),),
        top=_published(base, f"mobilenet_{alpha_text}_{rows}_tf.h5", _MOBILENET_V1_MD5),
        notop=_published(base, f"mobilenet_{alpha_text}_{rows}_tf_no_top.h5", _MOBILENET_V1_MD5),
        size_mb=round(params_m * 4.2, 1),
        parameters_m=params_m,
        top1=top1,
        top5=top5,
        speed="very fast",
        accuracy="low" if top1 < 60 else "medium",
        use="small servers, real time" if alpha < 1 else "mobile apps, real time",
        aliases=("mobilenet",) if default else (),
    )


# Published top-1/top-5 of MobileNet v1 per width and resolution (TF-slim model zoo, which Keras's
# weights come from); parameters depend on the width only.
_MOBILENET_V1 = {
    (1.0, 224): (70.9, 89.9), (1.0, 192): (70.0, 89.2), (1.0, 160): (68.0, 87.7), (1.0, 128): (65.2, 85.8),
    (0.75, 224): (68.4, 88.2), (0.75, 192): (67.2, 87.3), (0.75, 160): (65.3, 86.0), (0.75, 128): (62.1, 83.9),
    (0.5, 224): (63.3, 84.9), (0.5, 192): (61.7, 83.6), (0.5, 160): (59.1, 81.9), (0.5, 128): (56.3, 79.4),
    (0.25, 224): (49.8, 74.2), (0.25, 192): (47.7, 72.3), (0.25, 160): (45.5, 70.3), (0.25, 128): (41.5, 66.3),
}  # fmt: skip
_MOBILENET_V1_PARAMS = {1.0: 4.24, 0.75: 2.59, 0.5: 1.34, 0.25: 0.47}
# Keras publishes no hashes for MobileNet files; these were measured on the published files.
_MOBILENET_V1_MD5 = {
    "mobilenet_2_5_128_tf.h5": "8ef07e656c29ed236576fed9fdd37ce8",
    "mobilenet_2_5_224_tf_no_top.h5": "f313cee49f5d33dfb06f2b255c4adb64",
}


def _entries() -> list[ZooModel]:
    resnet = KERAS_APPS + "resnet/"
    entries = [
        # The reference guide's six, in its order.
        ZooModel(
            key="mobilenetv2",
            name="MobileNetV2",
            family="MobileNetV2",
            constructor="MobileNetV2",
            preprocess_module="mobilenet_v2",
            input_size=224,
            options=(("alpha", 1.0),),
            top=WeightsFile(
                "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
                KERAS_APPS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            ),
            notop=WeightsFile(
                "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                KERAS_APPS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            ),
            size_mb=14,
            parameters_m=3.5,
            top1=71.3,
            top5=90.1,
            speed="very fast",
            accuracy="medium",
            use="mobile apps, real time",
            recommended=True,
            aliases=("mobilenetv2-1.0-224",),
        ),
        ZooModel(
            key="resnet50",
            name="ResNet50",
            family="ResNet",
            constructor="ResNet50",
            preprocess_module="resnet50",
            input_size=224,
            top=WeightsFile(
                "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                resnet + "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
                "2cb95161c43110f7111970584f804107",
            ),
            notop=WeightsFile(
                "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                resnet + "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "4d473c1dd8becc155b73f8504c6f6626",
            ),
            size_mb=98,
            parameters_m=25.6,
            top1=74.9,
            top5=92.1,
            speed="medium",
            accuracy="high",
            use="general classification",
            recommended=True,
        ),
        ZooModel(
            key="efficientnetb0",
            name="EfficientNetB0",
            family="EfficientNet",
            constructor="EfficientNetB0",
            preprocess_module="efficientnet",
            input_size=224,
            top=WeightsFile(
                "efficientnetb0.h5", KERAS_APPS_ALT + "efficientnetb0.h5", "902e53a9f72be733fc0bcb005b3ebbac"
            ),
            notop=WeightsFile(
                "efficientnetb0_notop.h5",
                KERAS_APPS_ALT + "efficientnetb0_notop.h5",
                "50bc09e76180e00e4465e1a485ddc09d",
            ),
            size_mb=29,
            parameters_m=5.3,
            top1=77.1,
            top5=93.3,
            speed="fast",
            accuracy="high",
            use="good size/performance trade-off",
            recommended=True,
        ),
        ZooModel(
            key="efficientnetb7",
            name="EfficientNetB7",
            family="EfficientNet",
            constructor="EfficientNetB7",
            preprocess_module="efficientnet",
            input_size=600,
            top=WeightsFile(
                "efficientnetb7.h5", KERAS_APPS_ALT + "efficientnetb7.h5", "8c03f828fec3ef71311cd463b6759d99"
            ),
            notop=WeightsFile(
                "efficientnetb7_notop.h5",
                KERAS_APPS_ALT + "efficientnetb7_notop.h5",
                "cbcfe4450ddf6f3ad90b1b398090fe4a",
            ),
            size_mb=256,
            parameters_m=66.7,
            top1=84.3,
            top5=97.0,
            speed="slow",
            accuracy="very high",
            use="maximum accuracy",
            recommended=True,
        ),
        ZooModel(
            key="vgg16",
            name="VGG16",
            family="VGG",
            constructor="VGG16",
            preprocess_module="vgg16",
            input_size=224,
            top=WeightsFile(
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                "64373286793e3c8b2b4e3219cbf3544b",
            ),
            notop=WeightsFile(
                "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                KERAS_APPS + "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "6d6bbae143d832006294945121d1f1fc",
            ),
            size_mb=528,
            parameters_m=138.4,
            top1=71.3,
            top5=90.1,
            speed="slow",
            accuracy="medium",
            use="feature extraction",
            recommended=True,
        ),
        ZooModel(
            key="inceptionv3",
            name="InceptionV3",
            family="Inception",
            constructor="InceptionV3",
            preprocess_module="inception_v3",
            input_size=299,
            top=WeightsFile(
                "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                KERAS_APPS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                "9a0d58056eeedaa3f26cb7ebd46da564",
            ),
            notop=WeightsFile(
                "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                KERAS_APPS + "inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                "bcbd6486424b2319ff4ef7d526e38f63",
            ),
            size_mb=92,
            parameters_m=23.9,
            top1=77.9,
            top5=93.7,
            speed="medium",
            accuracy="high",
            use="accurate classification",
            recommended=True,
            min_input_size=75,
        ),
    ]
    for (alpha, rows), (top1, top5) in _MOBILENET_V1.items():
        entries.append(_mobilenet(alpha, rows, top1, top5, _MOBILENET_V1_PARAMS[alpha]))
    return entries


MODELS: dict[str, ZooModel] = {entry.key: entry for entry in _entries()}
_LOOKUP: dict[str, str] = {}
for _entry in MODELS.values():
    for _name in (_entry.key, _entry.name, *_entry.aliases):
        _LOOKUP[_name.lower()] = _entry.key


class UnknownModel(KeyError):
    """A model name that is in no registry entry; str() is the user-facing message."""

    def __str__(self) -> str:
        return str(self.args[0])


def get(name: str) -> ZooModel:
    """Find an entry by key, display name or alias, ignoring case ("MobileNetV2" works)."""
    key = _LOOKUP.get(name.strip().lower())
    if key is None:
        raise UnknownModel(
            f"Unknown model {name!r}. Known models: {', '.join(recommended_keys())}, and more on the Models page."
        )
    return MODELS[key]


def all_models() -> list[ZooModel]:
    """Every entry: the guide's six first (in its order), then the rest by family and size."""
    return sorted(MODELS.values(), key=lambda m: (not m.recommended, _order(m)))


def recommended_keys() -> list[str]:
    return [m.key for m in MODELS.values() if m.recommended]


def _order(model: ZooModel) -> tuple:
    if model.recommended:
        return (recommended_keys().index(model.key),)
    return (0, model.family, model.parameters_m, model.input_size)
