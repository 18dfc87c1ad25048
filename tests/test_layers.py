"""Models a config spells out: layer lists sized from the data, and the user's own nn.Module class."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from zerograd.errors import ConfigError
from zerograd.models import build_model


def test_a_layer_list_infers_every_input_size_from_the_data_shape() -> None:
    model = build_model([{"linear": 128}, "relu", {"dropout": 0.2}, {"linear": 10}], input_shape=[1, 28, 28])
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 10)]
    assert isinstance(model[0], nn.Flatten)  # images are flattened before the first linear layer
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_convolutions_and_pools_are_sized_in_a_chain() -> None:
    layers = [{"conv2d": 8}, "relu", {"maxpool2d": 2}, {"conv2d": {"out_channels": 16, "kernel_size": 5, "padding": 0}},
              "batchnorm", "relu", {"adaptive_avgpool2d": 1}, "flatten", {"linear": 3}]
    model = build_model(layers, input_shape=[3, 20, 20])
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(3, 8), (8, 16)]
    assert convs[0].padding == (1, 1)  # "same" by default: the image keeps its size
    assert isinstance(model[4], nn.BatchNorm2d) and model[4].num_features == 16
    assert model(torch.zeros(2, 3, 20, 20)).shape == (2, 3)


def test_tables_get_1d_layers() -> None:
    model = build_model([{"linear": 16}, "batchnorm", "tanh", {"linear": 1}], input_shape=[7])
    assert isinstance(model[1], nn.BatchNorm1d) and model[0].in_features == 7
    assert model(torch.zeros(4, 7)).shape == (4, 1)


def test_the_same_layer_list_loads_the_saved_weights() -> None:
    spec = [{"conv2d": 4}, "relu", {"linear": 2}]
    first, second = build_model(spec, input_shape=[1, 6, 6]), build_model(spec, input_shape=[1, 6, 6])
    second.load_state_dict(first.state_dict())
    x = torch.randn(3, 1, 6, 6)
    assert torch.equal(first(x), second(x))


@pytest.mark.parametrize(
    "layers, message",
    [
        ([{"linaer": 10}], 'layer 1: unknown layer "linaer" (did you mean "linear"?)'),
        (["relu", "dropuot"], 'layer 2: unknown layer "dropuot" (did you mean "dropout"?)'),
        ([{"conv2d": {"out_chanels": 4}}], 'layer 1 (conv2d) has no option "out_chanels" (did you mean '
                                           '"out_channels"?)'),
        ([{"relu": 3}], "layer 1 (relu) takes no size"),
        ([{"linear": 4, "relu": None}], "write each layer as a name"),
        ([{"conv2d": 4}], "conv2d needs image inputs of shape [channels, height, width], got [5]"),
        ([{"dropout": 1.5}], "dropout probability must be in [0, 1)"),
        ([], "the model's layer list is empty"),
    ],
)
def test_layer_list_mistakes_are_named(layers: list, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_model(layers, input_shape=[5])
    assert message in str(error.value)


def test_too_many_pools_for_the_image_size_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"layer 3 \(maxpool2d\) cannot take inputs of shape \[4, 1, 1\]"):
        build_model([{"maxpool2d": 2}, {"maxpool2d": 2}, {"maxpool2d": 2}], input_shape=[4, 4, 4])


def test_a_layer_list_needs_the_input_shape() -> None:
    with pytest.raises(ConfigError, match="needs the data's input shape"):
        build_model([{"linear": 3}], input_shape=None)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package `mynets` in the working directory, as a user's project would have."""
    package = tmp_path / "mynets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self, in_features=4, hidden=8, num_classes=3):
                super().__init__()
                self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

            def forward(self, x):
                return self.body(x)

        def not_a_model(size=3):
            return [size]
    """))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [n for n in sys.modules if n == "mynets" or n.startswith("mynets.")]:
        del sys.modules[name]


def test_a_users_class_is_imported_by_name_with_its_keyword_arguments(user_module: Path) -> None:
    model = build_model({"name": "mynets.nets:Net", "in_features": 6, "hidden": 5, "num_classes": 2})
    assert type(model).__name__ == "Net"
    assert model.body[0].in_features == 6 and model.body[0].out_features == 5
    assert model(torch.zeros(1, 6)).shape == (1, 2)
    assert str(user_module) not in sys.path  # the working directory was only looked in for this import


def test_a_class_in_a_python_file_is_imported_too(user_module: Path) -> None:
    model = build_model({"name": "mynets/nets.py:Net", "hidden": 4})
    assert model.body[0].out_features == 4


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "mynets.nets:Nett"}, 'mynets.nets has no "Nett" (did you mean "Net"?)'),
        ({"name": "mynets.nets:Net", "hiden": 3}, 'model mynets.nets:Net has no option "hiden" (did you mean '
                                                  '"hidden"?)'),
        ({"name": "nosuchpackage.nets:Net"}, "cannot import nosuchpackage.nets"),
        ({"name": "mynets.nets:not_a_model"}, "returned a list, not a torch nn.Module"),
        ({"name": "missing.py:Net"}, "model file missing.py does not exist"),
    ],
)
def test_import_mistakes_are_named(user_module: Path, spec: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_model(spec)
    assert message in str(error.value)
