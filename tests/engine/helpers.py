"""Spec helpers shared by the engine tests."""


def dense(units, activation="linear", **options):
    """A dense layer's spec."""
    return {"type": "dense", "units": units, "activation": activation, **options}


CLASSIFIER = {"layers": [dense(8, "relu"), dense(3, "softmax")]}
"""Four (or any number of) features to three classes."""
