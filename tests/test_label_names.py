"""Label names: one rule for forms, admin and zip folders."""

from __future__ import annotations

import unicodedata

import pytest

from training.names import InvalidName, clean_label_name, label_key


def test_surrounding_and_repeated_spaces_are_removed():
    assert clean_label_name("  golden   retriever \t") == "golden retriever"


def test_decomposed_unicode_from_macos_is_normalised():
    decomposed = unicodedata.normalize("NFD", "café")
    assert clean_label_name(decomposed) == "café"
    assert label_key(decomposed) == label_key("CAFÉ ")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("   ", "cannot be empty"),
        ("x" * 65, "at most 64 characters; this one has 65"),
        (".hidden", "cannot start with a dot"),
        ("..", "cannot start with a dot"),
        ("cats/dogs", "cannot contain /"),
        ("what?", "cannot contain ?"),
        ("tab\x00zero", "cannot contain"),
    ],
)
def test_names_that_cannot_be_labels_are_refused_with_the_reason(raw, message):
    with pytest.raises(InvalidName, match=message.replace("?", r"\?")):
        clean_label_name(raw)


def test_names_differing_only_in_case_or_spaces_share_a_key():
    assert label_key("Cats") == label_key(" cats ") == label_key("CATS")
    assert label_key("cats") != label_key("cat s")
