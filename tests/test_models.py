"""The model zoo: the tutorials' networks, their shapes and sizes, and clear errors for typos."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zerograd import config as configs
from zerograd.errors import ConfigError
from zerograd.models import TutorialCNN, build_model, count_parameters, mlp
from zerograd.rng import seed_everything


def linear_params(*sizes: int) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


@pytest.mark.parametrize("recipe, parameters", [
    ("mnist-mlp", linear_params(784, 64, 64, 64, 10)),
    ("fashion-mlp", linear_params(784, 512, 512, 10)),
    ("sinc-surface", linear_params(2, 80, 1)),
    ("linear-regression", 2),
    # conv(1,6,5) + conv(6,12,5) + fc 192-120-60-10
    ("fashion-cnn", (6 * 25 + 6) + (12 * 6 * 25 + 12) + linear_params(192, 120, 60, 10)),
])
def test_recipe_models_have_the_tutorials_sizes(recipe: str, parameters: int) -> None:
    model = build_model(configs.resolve(recipe)["model"])
    assert count_parameters(model) == parameters


@pytest.mark.parametrize("recipe, inputs, outputs", [
    ("mnist-mlp", (5, 1, 28, 28), (5, 10)),
    ("fashion-mlp", (5, 1, 28, 28), (5, 10)),
    ("fashion-cnn", (5, 1, 28, 28), (5, 10)),
    ("sinc-surface", (5, 2), (5, 1)),
    ("linear-regression", (5, 1), (5, 1)),
])
def test_recipe_models_map_their_data_to_their_outputs(recipe: str, inputs: tuple, outputs: tuple) -> None:
    model = build_model(configs.resolve(recipe)["model"])
    assert model(torch.rand(inputs)).shape == outputs


def test_mnist_mlp_ends_in_log_probabilities() -> None:
    model = build_model({"name": "mlp", "sizes": [784, 16, 10], "log_softmax": True})
    out = model(torch.rand(4, 1, 28, 28))
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(4), atol=1e-5)
    assert (out <= 0).all()


def test_mlp_layers_activation_dropout_and_flatten() -> None:
    model = mlp([2, 80, 1], "tanh", flatten=False)
    assert [type(m) for m in model] == [nn.Linear, nn.Tanh, nn.Linear]
    dropped = mlp([8, 4, 4, 2], dropout=0.5)
    assert [type(m) for m in dropped] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout,
                                          nn.Linear]


def test_tutorial_cnn_layers() -> None:
    model = TutorialCNN()
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size) == (1, 6, (5, 5))
    assert (model.conv2.in_channels, model.conv2.out_channels, model.conv2.kernel_size) == (6, 12, (5, 5))
    sizes = [(m.in_features, m.out_features) for m in (model.fc1, model.fc2, model.out)]
    assert sizes == [(192, 120), (120, 60), (60, 10)]


def test_build_model_from_a_name_uses_the_defaults() -> None:
    assert count_parameters(build_model("mlp")) == linear_params(784, 64, 64, 64, 10)
    assert isinstance(build_model("tutorial_cnn"), TutorialCNN)


def test_initial_weights_come_from_the_seed() -> None:
    def weights(seed: int) -> torch.Tensor:
        seed_everything(seed)
        return torch.cat([p.flatten() for p in build_model("tutorial_cnn").parameters()])

    assert torch.equal(weights(1), weights(1))
    assert not torch.equal(weights(1), weights(2))


@pytest.mark.parametrize("spec, message", [
    ({"name": "mpl"}, 'unknown model "mpl".*did you mean "mlp"'),
    ({"name": "mlp", "size": [2, 1]}, 'model mlp has no option "size".*did you mean "sizes"'),
    ({"name": "mlp", "sizes": [10]}, "at least two sizes"),
    ({"name": "mlp", "sizes": [4, 4, 2], "activation_fn": "rellu"}, 'unknown activation "rellu".*did you mean "relu"'),
    ({"sizes": [4, 2]}, "'name' key"),
    (3, "model must be a name"),
])
def test_model_mistakes_are_config_errors(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(spec)  # type: ignore[arg-type]
