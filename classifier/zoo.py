"""The registry of pretrained ImageNet models: every fact about a model is written here once.

Plain Python, no Django. Keras is imported only when a model is built or preprocessing runs, so
pages that list the zoo never pay for importing TensorFlow. Adding a model is adding one entry.

Where the facts come from:
- file names, URLs and hashes: the installed Keras's own `keras/src/applications/*.py`;
- top-1/top-5: the keras.io Applications table, TF-slim's per-variant MobileNet tables (which
  Keras's MobileNet weights come from), the MobileNetV3 table in Keras's own docstring, and for
  ConvNeXt the evaluation of the converted Keras weights that Keras's docstring points to
  (sayakpaul/ConvNeXt-TF). A number nobody published stays None and pages show "—";
- parameters, multiply-accumulates and the weights layout of each file: counted on the built
  architecture by `data/make_zoo_facts.py` and shipped in `data/zoo_facts.json` (tests check the
  file against the installed Keras).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"
KERAS_APPS_ALT = "https://storage.googleapis.com/keras-applications/"
FACTS_FILE = Path(__file__).with_name("data") / "zoo_facts.json"

# Words the reference guide uses, and how entries it does not list get theirs.
SPEEDS = ("very fast", "fast", "medium", "slow")
ACCURACIES = ("low", "medium", "high", "very high")
# Million multiply-accumulates per image below which a model counts as "very fast", "fast",
# "medium"; above the last it is "slow". Chosen so the computed words agree with the guide's
# own words for its six models (MobileNetV2 301 M: very fast, EfficientNetB0 386 M: fast,
# ResNet50 3.9 G and InceptionV3 5.7 G: medium, VGG16 15.5 G and EfficientNetB7: slow).
SPEED_LIMITS_M = (350, 2_000, 8_000)
# Top-1 percent below which a model counts as "low", "medium", "high"; above: "very high".
ACCURACY_LIMITS = (60, 74, 82)


@dataclass(frozen=True)
class WeightsFile:
    """One published Keras weights file: its exact file name, where Keras downloads it, its hash.

    `filename` is the name Keras keeps it under in `~/.keras/models` (what `import_weights`
    and the weights folder use); the URL's own last part can differ (NASNet) and is accepted too.
    `file_hash` is what `keras.utils.get_file` checks (md5 or sha256, by length); None when Keras
    publishes no hash for the file.
    """

    filename: str
    url: str
    file_hash: str | None = None

    @property
    def url_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_algorithm(self) -> str | None:
        if not self.file_hash:
            return None
        return "sha256" if len(self.file_hash) == 64 else "md5"


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
    size_mb: float | None  # size of the with-top weights file (published, else parameters x 4 bytes)
    parameters_m: float | None  # millions of parameters, with top
    top1: float | None  # published ImageNet top-1 accuracy, percent
    top5: float | None
    speed: str  # words from the reference guide: "very fast" ... "slow"
    accuracy: str  # "low" ... "very high"
    use: str
    recommended: bool = False  # the reference guide's six, listed first
    options: tuple[tuple[str, Any], ...] = ()  # extra constructor arguments (alpha=...)
    min_input_size: int = 32  # smallest input the architecture accepts (for small test builds)
    aliases: tuple[str, ...] = field(default=())
    macs_m: float | None = None  # million multiply-accumulates per image at input_size (counted)
    size_estimated: bool = False  # size_mb computed from the parameter count, not published
    top_needs_input_size: bool = False  # the head's shapes depend on the input size (VGG's Flatten)
    accuracy_source: str = "keras.io"

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

    @property
    def architecture(self) -> tuple:
        """Entries with the same architecture share weights shapes: they differ only in input size."""
        return (self.constructor, self.options)

    def layout(self, include_top: bool = True) -> dict | None:
        """The counted layout of this entry's weights file: {"layers", "parameters", "digest"}."""
        return _FACTS.get(self.key, {}).get("top" if include_top else "notop")


# --- Helpers that turn published facts into entries -------------------------------------------
def _load_facts() -> dict[str, dict]:
    try:
        return json.loads(FACTS_FILE.read_text())
    except (OSError, ValueError):
        return {}


_FACTS = _load_facts()


def _speed(macs_m: float | None) -> str:
    if macs_m is None:
        return "—"
    for word, limit in zip(SPEEDS, SPEED_LIMITS_M, strict=False):
        if macs_m < limit:
            return word
    return SPEEDS[-1]


def _accuracy(top1: float | None) -> str:
    if top1 is None:
        return "—"
    for word, limit in zip(ACCURACIES, ACCURACY_LIMITS, strict=False):
        if top1 < limit:
            return word
    return ACCURACIES[-1]


def _files(base_url: str, top: str, notop: str, hashes: tuple[str | None, str | None] = (None, None)):
    return WeightsFile(top, base_url + top, hashes[0]), WeightsFile(notop, base_url + notop, hashes[1])


def _entry(
    key: str,
    name: str,
    family: str,
    constructor: str,
    module: str,
    input_size: int,
    files: tuple[WeightsFile, WeightsFile],
    top1: float | None,
    top5: float | None,
    use: str,
    *,
    size_mb: float | None = None,
    speed: str | None = None,
    accuracy: str | None = None,
    **extra: Any,
) -> ZooModel:
    """One entry; parameters and work per image come from the counted facts, words from the numbers."""
    facts = _FACTS.get(key, {})
    parameters = facts.get("parameters")
    macs = facts.get("macs")
    estimated = size_mb is None and parameters is not None
    if estimated:
        size_mb = parameters * 4 / 2**20  # float32 arrays are what the file holds
        size_mb = round(size_mb, 1) if size_mb < 100 else float(round(size_mb))
    return ZooModel(
        key=key,
        name=name,
        family=family,
        constructor=constructor,
        preprocess_module=module,
        input_size=input_size,
        top=files[0],
        notop=files[1],
        size_mb=size_mb,
        parameters_m=round(parameters / 1e6, 2) if parameters else None,
        top1=top1,
        top5=top5,
        speed=speed or _speed(macs / 1e6 if macs else None),
        accuracy=accuracy or _accuracy(top1),
        use=use,
        macs_m=round(macs / 1e6, 1) if macs else None,
        size_estimated=estimated,
        **extra,
    )


# --- The reference guide's six, in its order -------------------------------------------------
def _guide() -> list[ZooModel]:
    six = dict(recommended=True)
    return [
        _entry(
            "mobilenetv2", "MobileNetV2", "MobileNetV2", "MobileNetV2", "mobilenet_v2", 224,
            _mobilenet_v2_files(1.0, 224), 71.3, 90.1, "mobile apps, real time",
            size_mb=14, speed="very fast", accuracy="medium", options=(("alpha", 1.0),),
            aliases=("mobilenetv2-1.0-224",), **six,
        ),
        _entry(
            "resnet50", "ResNet50", "ResNet", "ResNet50", "resnet50", 224, _resnet_files("resnet50"),
            74.9, 92.1, "general classification", size_mb=98, speed="medium", accuracy="high", **six,
        ),
        _entry(
            "efficientnetb0", "EfficientNetB0", "EfficientNet", "EfficientNetB0", "efficientnet", 224,
            _efficientnet_files("b0"), 77.1, 93.3, "good size/performance trade-off",
            size_mb=29, speed="fast", accuracy="high", **six,
        ),
        _entry(
            "efficientnetb7", "EfficientNetB7", "EfficientNet", "EfficientNetB7", "efficientnet", 600,
            _efficientnet_files("b7"), 84.3, 97.0, "maximum accuracy",
            size_mb=256, speed="slow", accuracy="very high", **six,
        ),
        _entry(
            "vgg16", "VGG16", "VGG", "VGG16", "vgg16", 224,
            _files(KERAS_APPS + "vgg16/", "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                   "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   ("64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc")),
            71.3, 90.1, "feature extraction", size_mb=528, speed="slow", accuracy="medium",
            top_needs_input_size=True, **six,
        ),
        _entry(
            "inceptionv3", "InceptionV3", "Inception", "InceptionV3", "inception_v3", 299,
            _files(KERAS_APPS + "inception_v3/", "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
                   "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   ("9a0d58056eeedaa3f26cb7ebd46da564", "bcbd6486424b2319ff4ef7d526e38f63")),
            77.9, 93.7, "accurate classification", size_mb=92, speed="medium", accuracy="high",
            min_input_size=75, **six,
        ),
    ]  # fmt: skip


# --- Families from keras.applications, with the keras.io table's numbers ----------------------
_RESNET_MD5 = {
    "resnet50": ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    "resnet50v2": ("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
    "resnet101v2": ("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5"),
    "resnet152v2": ("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33"),
}


def _resnet_files(name: str):
    return _files(
        KERAS_APPS + "resnet/",
        f"{name}_weights_tf_dim_ordering_tf_kernels.h5",
        f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5",
        _RESNET_MD5[name],
    )


_EFFICIENTNET_MD5 = {
    "b0": ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    "b1": ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    "b2": ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    "b3": ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    "b4": ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    "b5": ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    "b6": ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    "b7": ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
}


def _efficientnet_files(variant: str):
    name = f"efficientnet{variant}"
    return _files(KERAS_APPS_ALT, f"{name}.h5", f"{name}_notop.h5", _EFFICIENTNET_MD5[variant])


_EFFICIENTNET_V2_MD5 = {
    "b0": ("21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff"),
    "b1": ("069f0534ff22adf035c89e2d9547a9dc", "0e80663031ca32d657f9caa404b6ec37"),
    "b2": ("424e49f28180edbde1e94797771950a7", "1dfe2e7a5d45b6632553a8961ea609eb"),
    "b3": ("1f1fc43bd98a6e4fd8fdfd551e02c7a0", "f6abf7b5849ac99a89b50dd3fd532856"),
    "s": ("e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070"),
    "m": ("a3bf6aa3276309f4fc6a34aa114c95cd", "1b8dc055df72dde80d614482840fe342"),
    "l": ("27e6d408b53c7ebc868fefa357689935", "b0b66b5c863aef5b46e8608fe1711615"),
}

_CONVNEXT_SHA256 = {
    "tiny": (
        "8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff",
        "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    ),
    "small": (
        "ce1277d8f1ee5a0ef0e171469089c18f5233860ceaf9b168049cb9263fd7483c",
        "6fc8009faa2f00c1c1dfce59feea9b0745eb260a7dd11bee65c8e20843da6eab",
    ),
    "base": (
        "52cbb006d3dadd03f6e095a8ca1aca47aecdd75acb4bc74bce1f5c695d0086e6",
        "40a20c5548a5e9202f69735ecc06c990e6b7c9d2de39f0361e27baeb24cb7c45",
    ),
    "large": (
        "070c5ed9ed289581e477741d3b34beffa920db8cf590899d6d2c67fba2a198a6",
        "96f02b6f0753d4f543261bc9d09bed650f24dd6bc02ddde3066135b63d23a1cd",
    ),
    "xlarge": (
        "c1f5ccab661354fc3a79a10fa99af82f0fbf10ec65cb894a3ae0815f17a889ee",
        "de3f8a54174130e0cecdc71583354753d557fcf1f4487331558e2a16ba0cfe05",
    ),
}


def _keras_io() -> list[ZooModel]:
    entries = [
        _entry(
            "xception", "Xception", "Xception", "Xception", "xception", 299,
            _files(KERAS_APPS + "xception/", "xception_weights_tf_dim_ordering_tf_kernels.h5",
                   "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   ("0a58e3b7378bc2990ea3b43d5981f1f6", "b0042744bf5b25fce3cb969f33bebb97")),
            79.0, 94.5, "accurate classification", size_mb=88, min_input_size=71,
        ),
        _entry(
            "vgg19", "VGG19", "VGG", "VGG19", "vgg19", 224,
            _files(KERAS_APPS + "vgg19/", "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
                   "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   ("cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6")),
            71.3, 90.0, "feature extraction", size_mb=549, top_needs_input_size=True,
        ),
        _entry(
            "inceptionresnetv2", "InceptionResNetV2", "Inception", "InceptionResNetV2", "inception_resnet_v2", 299,
            _files(KERAS_APPS + "inception_resnet_v2/", "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
                   "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
                   ("e693bd0210a403b3192acc6073ad2e96", "d19885ff4a710c122648d3b5c3b684e4")),
            80.3, 95.3, "high accuracy", size_mb=215, min_input_size=75,
        ),
        _entry(
            "nasnetmobile", "NASNetMobile", "NASNet", "NASNetMobile", "nasnet", 224,
            (WeightsFile("nasnet_mobile.h5", KERAS_APPS + "nasnet/NASNet-mobile.h5",
                         "020fb642bf7360b370c678b08e0adf61"),
             WeightsFile("nasnet_mobile_no_top.h5", KERAS_APPS + "nasnet/NASNet-mobile-no-top.h5",
                         "1ed92395b5b598bdda52abe5c0dbfd63")),
            74.4, 91.9, "mobile apps", size_mb=23,
        ),
        _entry(
            "nasnetlarge", "NASNetLarge", "NASNet", "NASNetLarge", "nasnet", 331,
            (WeightsFile("nasnet_large.h5", KERAS_APPS + "nasnet/NASNet-large.h5", "11577c9a518f0070763c2b964a382f17"),
             WeightsFile("nasnet_large_no_top.h5", KERAS_APPS + "nasnet/NASNet-large-no-top.h5",
                         "d81d89dc07e6e56530c4e77faddd61b5")),
            82.5, 96.0, "maximum accuracy", size_mb=343,
        ),
    ]  # fmt: skip
    for name, top1, top5, size in (
        ("ResNet101", 76.4, 92.8, 171), ("ResNet152", 76.6, 93.1, 232),
        ("ResNet50V2", 76.0, 93.0, 98), ("ResNet101V2", 77.2, 93.8, 171), ("ResNet152V2", 78.0, 94.2, 232),
    ):  # fmt: skip
        key = name.lower()
        module = "resnet_v2" if key.endswith("v2") else "resnet"
        entries.append(
            _entry(key, name, "ResNet", name, module, 224, _resnet_files(key), top1, top5, "general classification",
                   size_mb=size)
        )  # fmt: skip
    for name, top1, top5, size in (
        ("DenseNet121", 75.0, 92.3, 33), ("DenseNet169", 76.2, 93.2, 57), ("DenseNet201", 77.3, 93.6, 80),
    ):  # fmt: skip
        key = name.lower()
        md5 = {
            "densenet121": ("9d60b8095a5708f2dcce2bca79d332c7", "30ee3e1110167f948a6b9946edeeb738"),
            "densenet169": ("d699b8f76981ab1b30698df4c175e90b", "b8c4d4c20dd625c148057b9ff1c1176b"),
            "densenet201": ("1ceb130c1ea1b78c3bf6114dbdfd8807", "c13680b51ded0fb44dff2d8f86ac8bb1"),
        }[key]
        files = _files(KERAS_APPS + "densenet/", f"{key}_weights_tf_dim_ordering_tf_kernels.h5",
                       f"{key}_weights_tf_dim_ordering_tf_kernels_notop.h5", md5)  # fmt: skip
        entries.append(_entry(key, name, "DenseNet", name, "densenet", 224, files, top1, top5, "compact, accurate",
                              size_mb=size))  # fmt: skip
    for variant, size_px, top1, top5, size in (
        ("b1", 240, 79.1, 94.4, 31), ("b2", 260, 80.1, 94.9, 36), ("b3", 300, 81.6, 95.7, 48),
        ("b4", 380, 82.9, 96.4, 75), ("b5", 456, 83.6, 96.7, 118), ("b6", 528, 84.0, 96.8, 166),
    ):  # fmt: skip
        name = f"EfficientNet{variant.upper()}"
        entries.append(
            _entry(name.lower(), name, "EfficientNet", name, "efficientnet", size_px, _efficientnet_files(variant),
                   top1, top5, "size/accuracy trade-off", size_mb=size)
        )  # fmt: skip
    for variant, size_px, top1, top5, size in (
        ("b0", 224, 78.7, 94.3, 29), ("b1", 240, 79.8, 95.0, 34), ("b2", 260, 80.5, 95.1, 42),
        ("b3", 300, 82.0, 95.8, 59), ("s", 384, 83.9, 96.7, 88), ("m", 480, 85.3, 97.4, 220),
        ("l", 480, 85.7, 97.5, 479),
    ):  # fmt: skip
        name = f"EfficientNetV2{variant.upper()}"
        stem = f"efficientnetv2-{variant}"
        files = _files(KERAS_APPS + "efficientnet_v2/", f"{stem}.h5", f"{stem}_notop.h5", _EFFICIENTNET_V2_MD5[variant])
        entries.append(
            _entry(name.lower(), name, "EfficientNetV2", name, "efficientnet_v2", size_px, files, top1, top5,
                   "high accuracy, efficient", size_mb=size, aliases=(stem,))
        )  # fmt: skip
    # Top-1 of the converted Keras weights (sayakpaul/ConvNeXt-TF, linked from Keras's docstring);
    # top-5 was not published. Base, Large and XLarge were pre-trained on ImageNet-21k.
    for variant, top1 in (("tiny", 81.3), ("small", 82.4), ("base", 85.4), ("large", 86.4), ("xlarge", 86.7)):
        name = f"ConvNeXt{variant.capitalize() if variant != 'xlarge' else 'XLarge'}"
        stem = f"convnext_{variant}"
        files = _files(KERAS_APPS + "convnext/", f"{stem}.h5", f"{stem}_notop.h5", _CONVNEXT_SHA256[variant])
        entries.append(
            _entry(name.lower(), name, "ConvNeXt", name, "convnext", 224, files, top1, None, "modern, high accuracy",
                   aliases=(stem,), accuracy_source="ConvNeXt-TF")
        )  # fmt: skip
    return entries


# --- Width and resolution variants ------------------------------------------------------------
# MobileNet v1: TF-slim's table (which Keras's weights come from), (alpha, rows) -> (top-1, top-5).
_MOBILENET_V1 = {
    (1.0, 224): (70.9, 89.9), (1.0, 192): (70.0, 89.2), (1.0, 160): (68.0, 87.7), (1.0, 128): (65.2, 85.8),
    (0.75, 224): (68.4, 88.2), (0.75, 192): (67.2, 87.3), (0.75, 160): (65.3, 86.0), (0.75, 128): (62.1, 83.9),
    (0.5, 224): (63.3, 84.9), (0.5, 192): (61.7, 83.6), (0.5, 160): (59.1, 81.9), (0.5, 128): (56.3, 79.4),
    (0.25, 224): (49.8, 74.2), (0.25, 192): (47.7, 72.3), (0.25, 160): (45.5, 70.3), (0.25, 128): (41.5, 66.3),
}  # fmt: skip
# Keras publishes no hashes for MobileNet files; these were measured on the published files.
_MOBILENET_V1_MD5 = {
    "mobilenet_2_5_128_tf.h5": "8ef07e656c29ed236576fed9fdd37ce8",
    "mobilenet_2_5_224_tf_no_top.h5": "f313cee49f5d33dfb06f2b255c4adb64",
}


def _mobilenet(alpha: float, rows: int, top1: float, top5: float) -> ZooModel:
    alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
    base = KERAS_APPS + "mobilenet/"
    top, notop = f"mobilenet_{alpha_text}_{rows}_tf.h5", f"mobilenet_{alpha_text}_{rows}_tf_no_top.h5"
    files = (
        WeightsFile(top, base + top, _MOBILENET_V1_MD5.get(top)),
        WeightsFile(notop, base + notop, _MOBILENET_V1_MD5.get(notop)),
    )
    default = alpha == 1.0 and rows == 224
    return _entry(
        f"mobilenet-{alpha:g}-{rows}".replace("-1-", "-1.0-"),
        f"MobileNet {alpha:g} @{rows}",
        "MobileNet",
        "MobileNet",
        "mobilenet",
        rows,
        files,
        top1,
        top5,
        "small servers, real time" if alpha < 1 else "mobile apps, real time",
        size_mb=16 if default else None,
        options=(("alpha", alpha),),
        aliases=("mobilenet",) if default else (),
        accuracy_source="TF-slim",
    )


# MobileNetV2: TF-slim's table. Keras publishes widths 0.35-1.0 at 96-224 and 1.3, 1.4 at 224.
_MOBILENET_V2 = {
    (1.4, 224): (75.0, 92.5), (1.3, 224): (74.4, 92.1),
    (1.0, 192): (70.7, 90.1), (1.0, 160): (68.8, 89.0), (1.0, 128): (65.3, 86.9), (1.0, 96): (60.3, 83.2),
    (0.75, 224): (69.8, 89.6), (0.75, 192): (68.7, 88.9), (0.75, 160): (66.4, 87.3), (0.75, 128): (63.2, 85.3),
    (0.75, 96): (58.8, 81.6),
    (0.5, 224): (65.4, 86.4), (0.5, 192): (63.9, 85.4), (0.5, 160): (61.0, 83.2), (0.5, 128): (57.7, 80.8),
    (0.5, 96): (51.2, 75.8),
    (0.35, 224): (60.3, 82.9), (0.35, 192): (58.2, 81.2), (0.35, 160): (55.7, 79.1), (0.35, 128): (50.8, 75.0),
    (0.35, 96): (45.5, 70.4),
}  # fmt: skip


def _mobilenet_v2_files(alpha: float, rows: int):
    stem = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}"
    return _files(KERAS_APPS + "mobilenet_v2/", f"{stem}.h5", f"{stem}_no_top.h5")


def _mobilenet_v2(alpha: float, rows: int, top1: float, top5: float) -> ZooModel:
    return _entry(
        f"mobilenetv2-{float(alpha)}-{rows}",
        f"MobileNetV2 {float(alpha):g} @{rows}",
        "MobileNetV2",
        "MobileNetV2",
        "mobilenet_v2",
        rows,
        _mobilenet_v2_files(alpha, rows),
        top1,
        top5,
        "small servers, real time" if alpha < 1 or rows < 224 else "mobile apps, real time",
        options=(("alpha", alpha),),
        accuracy_source="TF-slim",
    )


# MobileNetV3: the table in Keras's own docstring (top-5 not published), all at 224.
_MOBILENET_V3 = {
    ("Large", 1.0, False): 75.6, ("Large", 0.75, False): 73.3, ("Large", 1.0, True): 72.3,
    ("Small", 1.0, False): 68.1, ("Small", 0.75, False): 65.4, ("Small", 1.0, True): 61.9,
}  # fmt: skip
_MOBILENET_V3_MD5 = {
    "large_224_0.75_float": ("765b44a33ad4005b3ac83185abf1d0eb", "40af19a13ebea4e2ee0c676887f69a2e"),
    "large_224_1.0_float": ("59e551e166be033d707958cf9e29a6a7", "07fb09a5933dd0c8eaafa16978110389"),
    "large_minimalistic_224_1.0_float": ("675e7b876c45c57e9e63e6d90a36599c", "ec5221f64a2f6d1ef965a614bdae7973"),
    "small_224_0.75_float": ("cb65d4e5be93758266aa0a7f2c6708b7", "ebdb5cc8e0b497cd13a7c275d475c819"),
    "small_224_1.0_float": ("8768d4c2e7dee89b9d02b2d03d65d862", "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "small_minimalistic_224_1.0_float": ("99cd97fb2fcdad2bf028eb838de69e37", "cde8136e733e811080d9fcd8a252f7e4"),
}


def _mobilenet_v3(size: str, alpha: float, minimalistic: bool, top1: float) -> ZooModel:
    stem = f"{size.lower()}{'_minimalistic' if minimalistic else ''}_224_{alpha}_float"
    files = _files(
        KERAS_APPS + "mobilenet_v3/",
        f"weights_mobilenet_v3_{stem}.h5",
        f"weights_mobilenet_v3_{stem}_no_top_v2.h5",
        _MOBILENET_V3_MD5[stem],
    )
    constructor = f"MobileNetV3{size}"
    suffix = " minimalistic" if minimalistic else ("" if alpha == 1.0 else f" {alpha:g}")
    key = constructor.lower() + ("-minimalistic" if minimalistic else ("" if alpha == 1.0 else f"-{alpha:g}"))
    return _entry(
        key,
        constructor + suffix,
        "MobileNetV3",
        constructor,
        "mobilenet_v3",
        224,
        files,
        top1,
        None,
        "simple operations, accelerators" if minimalistic else "real time on small CPUs",
        options=(("alpha", alpha), ("minimalistic", minimalistic)),
        aliases=(f"{key}-1.0",) if alpha == 1.0 and not minimalistic else (),
        accuracy_source="Keras",
    )


def _entries() -> list[ZooModel]:
    entries = _guide() + _keras_io()
    for (alpha, rows), (top1, top5) in _MOBILENET_V1.items():
        entries.append(_mobilenet(alpha, rows, top1, top5))
    for (alpha, rows), (top1, top5) in _MOBILENET_V2.items():
        entries.append(_mobilenet_v2(alpha, rows, top1, top5))
    for (size, alpha, minimalistic), top1 in _MOBILENET_V3.items():
        entries.append(_mobilenet_v3(size, alpha, minimalistic, top1))
    return entries


MODELS: dict[str, ZooModel] = {entry.key: entry for entry in _entries()}
_LOOKUP: dict[str, str] = {}
for _entry_ in MODELS.values():
    for _name in (_entry_.key, _entry_.name, *_entry_.aliases):
        _LOOKUP.setdefault(_name.lower(), _entry_.key)


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


def lookup_names() -> dict[str, str]:
    """Every name `get` accepts (lower case) and the key it finds: tests check none is ambiguous."""
    return dict(_LOOKUP)


def all_models() -> list[ZooModel]:
    """Every entry: the guide's six first (in its order), then the rest by family and size."""
    return sorted(MODELS.values(), key=lambda m: (not m.recommended, _order(m)))


def recommended_keys() -> list[str]:
    return [m.key for m in MODELS.values() if m.recommended]


def families() -> list[str]:
    """Family names in the order the table lists them."""
    seen: dict[str, None] = {}
    for model in all_models():
        seen.setdefault(model.family, None)
    return sorted(seen)


def _order(model: ZooModel) -> tuple:
    if model.recommended:
        return (recommended_keys().index(model.key),)
    return (0, model.family, model.parameters_m or 0, model.input_size, model.key)
