"""One catalog of models: the zoo and other sources (trained models) behind one lookup."""

from __future__ import annotations

from dataclasses import replace

import pytest

from classifier import catalog


class FakeTrainedSource:
    """A source like the training app's: its own key space, access by user."""

    def __init__(self, choice: catalog.ModelChoice, allowed) -> None:
        self.choice, self.allowed = choice, allowed

    def choices(self, user):
        return [self.choice] if self.allowed(user) else []

    def find(self, name, user):
        return self.choice if name == self.choice.key and self.allowed(user) else None


@pytest.fixture
def trained_resnet(monkeypatch):
    """A trained model a user named "ResNet50", visible to bob only."""
    zoo_like = catalog.find("mobilenet-0.5-128")
    choice = replace(
        zoo_like, key="trained-7", name="ResNet50", kind=catalog.TRAINED, group="Trained models", recommended=False,
        labels=("cats", "dogs_and_puppies"), available=True,
    )  # fmt: skip
    source = FakeTrainedSource(choice, lambda user: user is not None and user.username == "bob")
    monkeypatch.setattr(catalog, "_sources", [*catalog._sources, source])
    return choice


def test_a_trained_model_never_shadows_the_zoo_entry_of_the_same_name(trained_resnet, bob):
    assert catalog.find("ResNet50", bob).kind == catalog.PRETRAINED
    assert catalog.find("trained-7", bob).name == "ResNet50"


def test_a_trained_model_is_unknown_to_someone_who_may_not_use_it(trained_resnet, charlie):
    with pytest.raises(catalog.UnknownModel, match="Unknown model 'trained-7'"):
        catalog.find("trained-7", charlie)


def test_available_models_put_recommended_then_trained_then_families(trained_resnet, bob, install_weights):
    install_weights("mobilenet-0.5-128")
    install_weights("mobilenetv2")
    keys = [c.key for c in catalog.available(bob)]
    assert keys == ["mobilenetv2", "trained-7", "mobilenet-0.5-128"]


def test_labels_of_trained_models_are_shown_as_typed():
    assert catalog.display_label("mobilenetv2", "fire_engine") == "fire engine"
    assert catalog.display_label("trained-7", "dogs_and_puppies") == "dogs_and_puppies"


def test_the_default_model_is_an_installed_one_when_the_setting_names_a_missing_model(db, settings, install_weights):
    settings.DEFAULT_MODEL = "mobilenetv2"  # not installed
    assert catalog.default_key() is None
    install_weights("mobilenet-0.5-128")
    assert catalog.default_key() == "mobilenet-0.5-128"


def test_an_unknown_model_cannot_be_resolved_by_the_engine(db):
    with pytest.raises(catalog.ModelUnavailable, match="Unknown model 'nope'"):
        catalog.resolve("nope")


def test_an_unknown_name_lists_the_models_this_user_can_run(trained_resnet, bob, charlie, install_weights):
    install_weights("mobilenet-0.5-128")
    with pytest.raises(catalog.UnknownModel) as info:
        catalog.find("alexnet", bob)
    assert "Models you can use here: trained-7, mobilenet-0.5-128." in str(info.value)
    with pytest.raises(catalog.UnknownModel) as info:
        catalog.find("alexnet", charlie)
    assert "Models you can use here: mobilenet-0.5-128." in str(info.value)


def test_without_installed_weights_the_default_is_a_trained_model_the_user_may_run(trained_resnet, bob, settings):
    settings.DEFAULT_MODEL = "mobilenetv2"  # not installed
    assert catalog.default_key(bob) == "trained-7"
