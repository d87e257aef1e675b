"""String names: after `import keras_batchopt`, `compile(optimizer="adan")`
works for every optimizer of the package, and Keras's own names resolve as
they did without it."""

import keras
import numpy as np
import pytest

import keras_batchopt
from keras_batchopt.src.optimizers import string_names
from tests.conftest import to_numpy

NAMES = sorted(string_names.string_names())


@pytest.fixture
def custom_objects():
    """Keras's global custom objects, restored after the test."""
    objects = keras.saving.get_custom_objects()
    saved = dict(objects)
    yield objects
    objects.clear()
    objects.update(saved)


def _one_step(model, optimizer):
    """Compiles with `optimizer` and fits one batch; returns the weights
    before and after."""
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    before = [to_numpy(w) for w in model.trainable_weights]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    after = [to_numpy(w) for w in model.trainable_weights]
    return before, after


def _model(optimizer_class):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    if getattr(optimizer_class, "needs_hessian", False):
        model = keras_batchopt.curvature.enable_hessian_training(model)
    return model


def test_every_optimizer_but_lamb_has_its_module_name():
    module = keras_batchopt.optimizers
    optimizers = {
        getattr(module, name)
        for name in dir(module)
        if isinstance(getattr(module, name), type)
        and getattr(module, name) is not module.BatchOptimizer
    }
    named = string_names.string_names()
    # NormalizeAndProject wraps an optimizer: there is nothing to build
    # from a name alone.
    wrappers = {module.NormalizeAndProject}
    assert set(named.values()) == optimizers - {module.Lamb} - wrappers
    for name, cls in named.items():
        assert cls.__module__.rsplit(".", 1)[-1] == name


@pytest.mark.parametrize("name", NAMES)
def test_name_compiles_and_fits_one_step(name):
    cls = string_names.string_names()[name]
    assert type(keras.optimizers.get(name)) is cls
    model = _model(cls)
    before, after = _one_step(model, name)
    assert type(model.optimizer) is cls
    assert int(to_numpy(model.optimizer.iterations)) == 1
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


def test_our_lamb_by_its_registered_name():
    assert type(keras.optimizers.get("keras_batchopt>Lamb")) is (
        keras_batchopt.optimizers.Lamb
    )
    model = _model(keras_batchopt.optimizers.Lamb)
    before, after = _one_step(model, "keras_batchopt>Lamb")
    assert type(model.optimizer) is keras_batchopt.optimizers.Lamb
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))


def _outcome(name):
    """What `keras.optimizers.get(name)` gives: a class, or the error."""
    try:
        return type(keras.optimizers.get(name))
    except ValueError as error:
        return str(error)


@pytest.mark.parametrize(
    "name", ["lamb", "Lamb", "adam", "Adam", "sgd", "lion", "adamw"]
)
def test_keras_names_resolve_as_without_the_package(name, custom_objects):
    with_ours = _outcome(name)
    for ours in NAMES:
        del custom_objects[ours]
    assert _outcome(name) == with_ours
    assert with_ours not in set(string_names.string_names().values()) | {
        keras_batchopt.optimizers.Lamb
    }


def test_lamb_stays_keras():
    """Keras owns "lamb" (`keras.optimizers.Lamb`): it is not entered, so
    `get("lamb")` is Keras's answer (an error on Keras 3.8 to 3.15, whose
    string table lacks Lamb), never our Lamb."""
    assert "lamb" in string_names.keras_optimizer_names()
    assert "lamb" not in keras.saving.get_custom_objects()
    outcome = _outcome("lamb")
    if isinstance(outcome, str):
        assert "Could not interpret optimizer identifier" in outcome
    else:
        assert issubclass(outcome, keras.optimizers.Lamb)


@pytest.mark.parametrize("name", ["adan_typo", "Adan", "sgdsai", "lars "])
def test_unknown_names_raise_keras_error(name):
    with pytest.raises(ValueError, match="Could not interpret optimizer"):
        keras.optimizers.get(name)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="Could not interpret optimizer"):
        model.compile(optimizer=name, loss="mse")


def test_register_skips_keras_names_and_existing_entries(
    custom_objects, monkeypatch
):
    for ours in NAMES:
        del custom_objects[ours]

    class UsersAdan(keras.optimizers.SGD):
        pass

    custom_objects["adan"] = UsersAdan
    adan = keras_batchopt.optimizers.Adan
    monkeypatch.setattr(
        string_names,
        "string_names",
        lambda: {"adan": adan, "adam": adan, "lion": adan, "lars": adan},
    )
    assert string_names.register_string_names() == ["lars"]
    assert custom_objects["adan"] is UsersAdan
    assert "adam" not in custom_objects and "lion" not in custom_objects
    assert isinstance(keras.optimizers.get("adam"), keras.optimizers.Adam)
    assert string_names.register_string_names() == []


def test_serialization_keeps_the_registered_name():
    config = keras.optimizers.serialize(keras_batchopt.optimizers.Adan())
    assert config["registered_name"] == "keras_batchopt>Adan"
    assert type(keras.optimizers.deserialize(config)) is (
        keras_batchopt.optimizers.Adan
    )


def test_layer_configs_resolve_without_custom_objects():
    """Layers are found by their registered name, which `serialize` writes
    and a hand-written config can give as its class name."""
    cls = keras_batchopt.layers.GhostBatchNormalization
    config = keras.layers.serialize(cls(virtual_batch_size=2))
    assert config["registered_name"] == "keras_batchopt>GhostBatchNormalization"
    layer = keras.layers.deserialize(config)
    assert type(layer) is cls and layer.virtual_batch_size == 2
    by_hand = {
        "class_name": "keras_batchopt>GhostBatchNormalization",
        "config": {"virtual_batch_size": 4},
    }
    layer = keras.layers.deserialize(by_hand)
    assert type(layer) is cls and layer.virtual_batch_size == 4


def test_users_own_class_of_the_same_name_still_wins():
    """No bare class name is entered globally: Keras would prefer it to the
    user's `custom_objects` for a config saved from their own class."""

    class GhostBatchNormalization(keras.layers.Layer):
        pass

    class Adan(keras.optimizers.SGD):
        pass

    config = keras.layers.serialize(GhostBatchNormalization())
    layer = keras.layers.deserialize(
        config,
        custom_objects={"GhostBatchNormalization": GhostBatchNormalization},
    )
    assert type(layer) is GhostBatchNormalization
    config = keras.optimizers.serialize(Adan())
    optimizer = keras.optimizers.deserialize(
        config, custom_objects={"Adan": Adan}
    )
    assert type(optimizer) is Adan
