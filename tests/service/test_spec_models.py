"""The API's spec models are derived from the engine's declarations: every layer, option and default
is in the OpenAPI document, and a layer that holds a layer spec (a wrapper) derives too."""

from __future__ import annotations

from nnserve.engine import TrainingConfig
from nnserve.engine.layers import LAYERS
from nnserve.engine.params import Component, Configurable, Param
from nnserve.service.spec_models import NOT_SERVED, SERVICE_TRAINING_FIELDS, _Derivation
from tests.engine.test_params import TOYS


def test_every_layer_and_training_field_is_in_the_document(client):
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    layers = schemas["ModelSpec"]["properties"]["layers"]["items"]["discriminator"]["mapping"]
    assert set(layers) == set(LAYERS)
    assert schemas["DenseLayer"]["properties"]["units"] == {
        "description": "outputs",
        "minimum": 1,
        "title": "Units",
        "type": "integer",
    }
    assert schemas["DenseLayer"]["required"] == ["type", "units"]
    training = schemas["TrainingSpec"]["properties"]
    assert set(training) == set(TrainingConfig.hyperparameters) - set(NOT_SERVED) | set(SERVICE_TRAINING_FIELDS)
    assert training["batch_size"]["default"] == 32
    assert schemas["AdamOptimizer"]["properties"]["beta_2"]["exclusiveMaximum"] == 1.0  # OpenAPI 3.1


def test_a_nested_layer_spec_derives_a_recursive_schema():
    class Holder(Configurable):
        """Holds a toy."""

        toy = Param(Component(TOYS), doc="a toy")

    derivation = _Derivation()
    model = derivation.model(Holder, "Holder")
    derivation.finish()
    schema = model.model_json_schema()
    wrapper = schema["$defs"]["WrapperToy"]
    assert wrapper["properties"]["layer"]["discriminator"]["mapping"] == {
        "conv": "#/$defs/ConvToy",
        "wrapper": "#/$defs/WrapperToy",
    }
    conv = schema["$defs"]["ConvToy"]["properties"]
    assert conv["kernel_size"]["anyOf"][1] == {
        "type": "array",
        "items": {"type": "integer", "minimum": 1},
        "minItems": 2,
        "maxItems": 2,
    }
