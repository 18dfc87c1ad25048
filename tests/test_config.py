"""The config grammar: recipes, `extends`, `--set` overrides, validation, and round-trips."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zerograd import config as configs
from zerograd.errors import ConfigError
from zerograd.options import FitOptions

RECIPES = ["fashion-cnn", "fashion-mlp", "linear-regression", "mnist-mlp", "sinc-surface"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_five_recipes_are_shipped() -> None:
    assert set(RECIPES) <= set(configs.recipe_names())  # the tutorial five, plus the fast ones


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_resolves_to_a_complete_valid_config(name: str) -> None:
    config = configs.resolve(name)
    assert config["name"] == name and config["description"]
    assert set(configs.TRAIN_KEYS) <= set(config)
    assert {"dataset"} <= set(config["data"]) and "name" in config["model"]
    FitOptions.from_kwargs(configs.fit_options(config))


@pytest.mark.parametrize("name, expected", [
    ("mnist-mlp", {"loss": "nll", "optimizer": "adam", "lr": 0.001, "batch_size": 10, "epochs": 3}),
    ("linear-regression", {"loss": {"name": "mse", "reduction": "sum"}, "optimizer": "sgd", "lr": 0.01, "epochs": 100}),
    ("sinc-surface", {"loss": "mse", "optimizer": "adam", "lr": 0.01, "batch_size": 200, "epochs": 400}),
    ("fashion-cnn", {"loss": "cross_entropy", "optimizer": "adam", "lr": 0.01, "batch_size": 100, "epochs": 3}),
    ("fashion-mlp",
     {"loss": "cross_entropy", "optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "batch_size": 64, "epochs": 5}),
])
def test_recipes_carry_the_tutorials_hyper_parameters(name: str, expected: dict) -> None:
    config = configs.resolve(name)
    assert {key: config[key] for key in expected} == expected


def test_recipe_models_match_the_tutorials() -> None:
    assert configs.resolve("mnist-mlp")["model"] == {"name": "mlp", "sizes": [784, 64, 64, 64, 10], "log_softmax": True}
    assert configs.resolve("fashion-mlp")["model"]["sizes"] == [784, 512, 512, 10]
    assert configs.resolve("sinc-surface")["model"]["sizes"] == [2, 80, 1]
    assert configs.resolve("fashion-cnn")["model"] == {"name": "tutorial_cnn"}


def test_unknown_recipe_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match='unknown recipe "fashion-cn".*did you mean "fashion-cnn"'):
        configs.resolve("fashion-cn")


def test_file_extends_a_recipe_and_overrides_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "quick.yaml", "extends: fashion-mlp\nepochs: 1\nmodel: {sizes: [784, 32, 10]}\n")
    config = configs.resolve(path)
    assert config["name"] == "quick"
    assert config["epochs"] == 1 and config["lr"] == 0.001 and config["momentum"] == 0.9
    assert config["model"] == {"name": "mlp", "sizes": [784, 32, 10]}  # nested mappings merge
    assert "extends" not in config


def test_replacing_the_model_drops_the_parents_options(tmp_path: Path) -> None:
    path = write(tmp_path / "cnn.yaml", "extends: fashion-mlp\nmodel: {name: tutorial_cnn}\n")
    assert configs.resolve(path)["model"] == {"name": "tutorial_cnn"}


def test_file_extends_a_file_next_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "configs" / "base.yaml", "extends: mnist-mlp\nlr: 0.5\nepochs: 7\n")
    child = write(tmp_path / "configs" / "child.yaml", "extends: base.yaml\nepochs: 2\n")
    monkeypatch.chdir(tmp_path)  # the parent is found next to the child, not in the working directory
    config = configs.resolve(child)
    assert (config["lr"], config["epochs"], config["loss"], config["name"]) == (0.5, 2, "nll", "child")


def test_extends_from_a_mapping(tmp_path: Path) -> None:
    config = configs.resolve({"extends": "linear-regression", "epochs": 5})
    assert config["epochs"] == 5 and config["data"] == {"dataset": "line"}


@pytest.mark.parametrize("files", [
    {"a.yaml": "extends: a.yaml\n"},
    {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
    {"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: c.yaml\n", "c.yaml": "extends: ./a.yaml\n"},
])
def test_extends_loops_are_detected(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match="'extends' loops"):
        configs.resolve(tmp_path / "a.yaml")


def test_missing_and_broken_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        configs.resolve(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        configs.resolve(write(tmp_path / "bad.yaml", "lr: [0.1\n"))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        configs.resolve(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    for text in ("", "# only a comment\n"):  # was "must hold a mapping ..., got NoneType"
        with pytest.raises(ConfigError, match=r"empty\.yaml is empty; give it keys such as `extends: mnist-mlp`"):
            configs.resolve(write(tmp_path / "empty.yaml", text))


@pytest.mark.parametrize("text, expected", [
    ("lr=0.01", ("lr", 0.01)),
    ("lr=1e-3", ("lr", 0.001)),
    ("lr=2.5E-4", ("lr", 0.00025)),
    ("epochs=3", ("epochs", 3)),
    ("shuffle=false", ("shuffle", False)),
    ("schedule=null", ("schedule", None)),
    ("model.sizes=[784, 128, 10]", ("model.sizes", [784, 128, 10])),
    ("optimizer.betas=[0.9,0.99]", ("optimizer.betas", [0.9, 0.99])),
    ("device=cpu", ("device", "cpu")),
    ("name=a=b", ("name", "a=b")),
    ("description=", ("description", "")),
])
def test_set_values_are_parsed_as_yaml(text: str, expected: tuple) -> None:
    assert configs.parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["lr", "=3", ""])
def test_set_without_key_and_value_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--set expects key=value"):
        configs.parse_assignment(text)


def test_exponent_floats_in_yaml_files_are_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "exp.yaml", "extends: mnist-mlp\nlr: 3e-4\nweight_decay: 1E-5\n")
    config = configs.resolve(path)
    assert config["lr"] == 3e-4 and config["weight_decay"] == 1e-5


def test_set_dotted_keys_reach_nested_sections() -> None:
    config = configs.resolve("mnist-mlp", {"model.sizes": [784, 32, 10], "data.normalize": True, "epochs": 1})
    assert config["model"] == {"name": "mlp", "sizes": [784, 32, 10], "log_softmax": True}
    assert config["data"] == {"dataset": "mnist", "normalize": True}
    assert config["epochs"] == 1


def test_set_turns_a_named_optimizer_into_a_mapping() -> None:
    config = configs.resolve("mnist-mlp", {"optimizer.betas": [0.9, 0.99]})
    assert config["optimizer"] == {"name": "adam", "betas": [0.9, 0.99]}
    config = configs.resolve("fashion-cnn", {"loss.label_smoothing": 0.1})
    assert config["loss"] == {"name": "cross_entropy", "label_smoothing": 0.1}


def test_set_can_add_a_section_that_was_null() -> None:
    config = configs.resolve("fashion-mlp", {"schedule.name": "cosine"})
    assert config["schedule"] == {"name": "cosine"}


def test_unknown_set_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match='unknown --set key "lerning_rate"') as error:
        configs.resolve("mnist-mlp", {"lerning_rate": 0.1})
    assert "valid keys:" in str(error.value)
    with pytest.raises(ConfigError, match='unknown --set key "epoch".*did you mean "epochs"'):
        configs.resolve("mnist-mlp", {"epoch": 1})


def test_dotted_key_on_a_plain_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match='"lr" is not a section'):
        configs.resolve("mnist-mlp", {"lr.value": 0.1})


def test_unknown_key_in_a_file_suggests_the_closest(tmp_path: Path) -> None:
    path = write(tmp_path / "typo.yaml", "extends: mnist-mlp\nbatchsize: 32\n")
    with pytest.raises(ConfigError, match='unknown config key "batchsize".*did you mean "batch_size"'):
        configs.resolve(path)


@pytest.mark.parametrize("overrides, message", [
    ({"lr": 0}, "lr must be > 0"),
    ({"epochs": -1}, "epochs must be > 0"),
    ({"batch_size": 0}, "batch_size must be > 0"),
    ({"epochs": "three"}, "epochs must be int"),
    ({"lr": "fast"}, "lr must be float"),
])
def test_resolve_validates_values(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        configs.resolve("mnist-mlp", overrides)


@pytest.mark.parametrize("missing", ["data", "model"])
def test_missing_data_or_model_section_says_what_to_add(missing: str) -> None:
    config = {"data": {"dataset": "line"}, "model": {"name": "linear"}}
    del config[missing]
    with pytest.raises(ConfigError, match=f'the config has no "{missing}" section'):
        configs.resolve(config)


@pytest.mark.parametrize("name", RECIPES)
def test_resolved_config_round_trips_through_yaml(name: str) -> None:
    resolved = configs.resolve(name, {"optimizer.betas": [0.9, 0.99]} if "mnist" in name else {"lr": 1e-5})
    again = configs.resolve(yaml.safe_load(configs.dump(resolved)))
    assert again == resolved
    assert configs.resolve(again) == resolved


def test_resolved_config_round_trips_through_a_file(tmp_path: Path) -> None:
    resolved = configs.resolve("sinc-surface", {"epochs": 2, "schedule": {"name": "cosine"}})
    path = write(tmp_path / "config.yaml", configs.dump(resolved))
    assert configs.resolve(path) == resolved


def test_resolve_does_not_modify_its_input() -> None:
    source = {"extends": "linear-regression", "model": {"name": "linear"}}
    configs.resolve(source, {"model.in_features": 1})
    assert source == {"extends": "linear-regression", "model": {"name": "linear"}}


def test_deep_merge_merges_mappings_and_replaces_the_rest() -> None:
    base = {"a": {"x": 1, "y": 2}, "b": [1, 2], "c": {"name": "adam", "betas": [0.9, 0.9]}}
    merged = configs.deep_merge(base, {"a": {"y": 3}, "b": [3], "c": {"name": "sgd"}})
    assert merged == {"a": {"x": 1, "y": 3}, "b": [3], "c": {"name": "sgd"}}
    assert base["a"] == {"x": 1, "y": 2}


def test_lr_moves_the_one_cycle_recipes() -> None:
    # their schedules take max_lr from the lr, so --lr changes every step's lr
    for recipe in ("mnist-mlp-fast", "mnist-fast"):
        resolved = configs.resolve(recipe, {"lr": 1e-9})
        assert resolved["lr"] == 1e-9 and "max_lr" not in resolved["schedule"]
    assert configs.resolve("mnist-mlp-fast", {"schedule.name": "cosine"})["schedule"] == {"name": "cosine"}


def test_an_lr_a_parent_configs_max_lr_would_ignore_is_refused(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text("extends: mnist-mlp-fast\nschedule: {name: onecycle, max_lr: 0.02}\n")
    (tmp_path / "child.yaml").write_text(f"extends: {tmp_path / 'parent.yaml'}\n")
    with pytest.raises(ConfigError, match=r"lr 0.5 would change nothing.*max_lr \(0.02\).*schedule.max_lr"):
        configs.resolve(str(tmp_path / "child.yaml"), {"lr": 0.5})
    assert configs.resolve(str(tmp_path / "child.yaml"), {"schedule.max_lr": 0.5})["schedule"]["max_lr"] == 0.5
    # a config that sets both itself is the user's own choice
    (tmp_path / "both.yaml").write_text("extends: mnist-mlp-fast\nlr: 0.1\nschedule: {name: onecycle, max_lr: 0.02}\n")
    assert configs.resolve(str(tmp_path / "both.yaml"))["lr"] == 0.1
