"""One mistake, one message: a bad spec sent to ``POST /v1/jobs`` gets the message ``engine.build`` gives,
at the same place (``layers[1].units`` there is ``model.layers.1.units`` here)."""

from __future__ import annotations

import pytest

from nnserve.engine import SpecError, build
from tests.service.helpers import IRIS_MODEL, IRIS_TRAINING


def dense(units, activation="relu", **options):
    return {"type": "dense", "units": units, "activation": activation, **options}


def submit(client, model=IRIS_MODEL, training=IRIS_TRAINING):
    return client.post("/v1/jobs", json={"dataset": "iris", "model": model, "training": training})


OUTPUT = dense(3, "softmax")

BAD_SPECS = {
    # Model specs: each with the training that goes with IRIS_MODEL.
    "no layers": ({"layers": []}, None),
    "layers not a list": ({"layers": OUTPUT}, None),
    "an unknown model field": ({**IRIS_MODEL, "optimiser": "adam"}, None),
    "an unknown layer type": ({"layers": [{"type": "conv3d", "filters": 8}, OUTPUT]}, None),
    "a layer without a type": ({"layers": [{"units": 8}, OUTPUT]}, None),
    "zero units": ({"layers": [dense(8), dense(0), OUTPUT]}, None),
    "units as text": ({"layers": [dense("8"), OUTPUT]}, None),
    "units as a fraction": ({"layers": [dense(2.5), OUTPUT]}, None),
    "a misspelt layer field": ({"layers": [{"type": "dense", "unit": 8}, OUTPUT]}, None),
    "an unknown activation": ({"layers": [dense(8, "relu6"), OUTPUT]}, None),
    "a bad activation parameter": ({"layers": [dense(8, {"name": "leaky_relu", "alpha": -1}), OUTPUT]}, None),
    "an activation parameter it does not take": ({"layers": [dense(8, {"name": "relu", "alpha": 0.1}), OUTPUT]}, None),
    "a dropout rate of 1": ({"layers": [dense(8), {"type": "dropout", "rate": 1.0}, OUTPUT]}, None),
    "an unknown initializer": ({"layers": [dense(8, kernel_initializer="xavier"), OUTPUT]}, None),
    "a bad regularizer": ({"layers": [dense(8, kernel_regularizer="l3"), OUTPUT]}, None),
    "a negative regularizer factor": ({"layers": [dense(8, kernel_regularizer={"l2": -1}), OUTPUT]}, None),
    "use_bias as text": ({"layers": [dense(8, use_bias="no"), OUTPUT]}, None),
    "no dense layer": ({"layers": [{"type": "dropout", "rate": 0.5}]}, None),
    "an unknown input scaling": ({**IRIS_MODEL, "input_scaling": "minmax"}, None),
    "an unknown dtype": ({**IRIS_MODEL, "dtype": "float16"}, None),
    # Training specs.
    "training not an object": (None, []),
    "an unknown training field": (None, {"epoch": 3}),
    "zero epochs": (None, {"epochs": 0}),
    "a batch size as text": (None, {"batch_size": "32"}),
    "a validation split of 1": (None, {"validation_split": 1.0}),
    "shuffle as text": (None, {"shuffle": "yes"}),
    "a negative seed": (None, {"seed": -1}),
    "an unknown loss": (None, {"loss": "hinge"}),
    "a bad loss parameter": (None, {"loss": {"name": "huber", "delta": 0}}),
    "an unknown optimizer": (None, {"optimizer": "adamw"}),
    "an unknown optimizer in an object": (None, {"optimizer": {"name": "adamw"}}),
    "a misspelt optimizer parameter": (None, {"optimizer": {"name": "sgd", "learnig_rate": 0.1}}),
    "a bad optimizer parameter": (None, {"optimizer": {"name": "adam", "beta_2": 1}}),
    "a bad schedule parameter": (None, {"optimizer": {"name": "sgd", "schedule": {"name": "step", "every": 0}}}),
    "metrics not a list": (None, {"metrics": "accuracy"}),
    "an unknown metric": (None, {"metrics": ["accuracy", "f1"]}),
    "class weights as a list": (None, {"class_weight": [1, 2]}),
    "a negative class weight": (None, {"class_weight": {"setosa": -1}}),
    "early stopping as text": (None, {"early_stopping": "yes"}),
    "a negative patience": (None, {"early_stopping": {"patience": -1}}),
    "a reduction factor of 1": (None, {"reduce_lr_on_plateau": {"factor": 1.0}}),
}


@pytest.mark.parametrize("model, training", list(BAD_SPECS.values()), ids=list(BAD_SPECS))
def test_the_api_says_what_the_engine_says(client, redis, model, training):
    model = IRIS_MODEL if model is None else model
    training = IRIS_TRAINING if training is None else training
    with pytest.raises(SpecError) as caught:
        build(model, training)
    error = caught.value
    where = ".".join(str(part) for part in error.loc)

    response = submit(client, model=model, training=training)
    assert response.status_code == 422, response.json
    assert response.json["errors"] == [
        {"loc": where if where.startswith("training") else f"model.{where}", "msg": error.message, "type": "spec_error"}
    ]
    assert not redis.keys("nnserve:job:*")


def test_the_places_are_written_for_each_door(client):
    model = {"layers": [dense(8), dense(0), OUTPUT]}
    with pytest.raises(SpecError, match=r"^layers\[1\]\.units: must be >= 1; received units=0$"):
        build(model)
    response = submit(client, model=model)
    assert response.json["detail"] == "model.layers.1.units: must be >= 1; received units=0"
