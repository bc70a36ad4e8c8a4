"""The reference tables of docs/spec.md and the dashboard's choices come from the declarations."""

from pathlib import Path

import pytest

from nnserve.engine import reference
from nnserve.engine.params import Configurable

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec.md"


def declared_classes():
    yield from (reference.Model, reference.TrainingConfig, reference.EarlyStopping, reference.ReduceLROnPlateau)
    for registry in reference.REGISTRIES:
        yield from registry.values()


def test_docs_spec_md_is_up_to_date():
    text = SPEC.read_text()
    assert reference.render(text) == text, f"docs/spec.md is stale: run {reference.COMMAND}"


def test_every_block_is_in_the_document_and_every_class_in_a_block():
    text = SPEC.read_text()
    assert sorted(m.group("name") for m in reference.BLOCK.finditer(text)) == sorted(reference.tables())
    generated = "".join(reference.tables().values())
    for registry in reference.REGISTRIES:
        for name in registry:
            assert f"`{name}`" in generated, name


@pytest.mark.parametrize("cls", list(declared_classes()), ids=lambda cls: cls.__name__)
def test_every_parameter_says_what_it_means(cls: type[Configurable]):
    assert [name for name, param in cls.hyperparameters.items() if not param.doc] == []
    assert reference.summary(cls), f"{cls.__name__} needs a docstring: its first line is its row in the reference"


def test_choices_name_every_class_and_its_parameters():
    choices = reference.choices()
    assert set(choices) == {"layers", "activations", "initializers", "losses", "metrics", "optimizers", "schedules"}
    assert choices["layers"]["dense"][:2] == ["units", "activation"]
    assert choices["activations"]["leaky_relu"] == ["alpha"] and choices["activations"]["relu"] == []
    assert list(choices["optimizers"]) == ["sgd", "adam", "rmsprop", "adagrad"]


def test_the_command_checks_and_rewrites(tmp_path, capsys):
    stale = tmp_path / "spec.md"
    stale.write_text("# Spec\n\n<!-- generated: schedules (see reference.py) -->\nold table\n<!-- end generated -->\n")
    assert reference.main(["--check", str(stale)]) == 1
    assert f"is stale: run {reference.COMMAND}" in capsys.readouterr().err
    assert reference.main([str(stale)]) == 0
    assert "| `cosine` |" in stale.read_text()
    assert reference.main(["--check", str(stale)]) == 0
