"""Fine-tuning and transfer: `init`, `freeze`, `unfreeze_after`, `fine_tune`, `lr_groups`, `lr_decay`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from zerograd.api import train
from zerograd.callbacks import Callback, Checkpointer, ResumeFrom
from zerograd.cli import main as cli
from zerograd.config import resolve
from zerograd.engine import fit
from zerograd.errors import CheckpointError, ConfigError, WeightsMismatchError, ZerogradWarning
from zerograd.models import build_model
from zerograd.own_data import resolve_config
from zerograd.transfer import init_from

# 160 samples, batch 16: 10 steps per epoch
CONFIG: dict[str, Any] = {
    "name": "sinc-small", "data": {"dataset": "sinc", "n": 12},
    "model": {"name": "mlp", "sizes": [2, 16, 16, 1], "activation_fn": "tanh", "flatten": False, "dropout": 0.1},
    "loss": "mse", "lr": 0.01, "batch_size": 16, "epochs": 3, "threads": 1, "progress": "none", "plots": False,
    "log_every": 0, "checkpoint_every": 4,
}


def classifier() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(120, 6, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


class Spy(Callback):
    """Records which parameters the optimizer keeps state for, and the weights, at each epoch end."""

    def __init__(self) -> None:
        self.with_state: list[set[int]] = []
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, state: Any, logs: dict[str, Any]) -> None:
        self.with_state.append({id(p) for p, s in state.optimizer.state.items() if s})
        self.weights.append({k: v.clone() for k, v in state.raw_model.state_dict().items()})


OPTIONS = dict(epochs=3, batch_size=16, lr=0.01, seed=5, threads=1, optimizer="adam", weight_decay=0.1)


def test_frozen_parameters_stay_bitwise_unchanged_and_get_no_optimizer_state() -> None:
    model, spy = classifier(), Spy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data(), callbacks=[spy], freeze=["0", "3.weight"], **OPTIONS)
    after = model.state_dict()
    for name in ("0.weight", "0.bias", "3.weight"):
        assert torch.equal(after[name], before[name]), name
    assert not torch.equal(after["3.bias"], before["3.bias"]) and not torch.equal(after["5.weight"], before["5.weight"])
    frozen = {id(model[0].weight), id(model[0].bias), id(model[3].weight)}
    assert spy.with_state[-1] and not spy.with_state[-1] & frozen


def test_unfreeze_after_trains_the_frozen_parameters_from_that_epoch_on() -> None:
    model, spy = classifier(), Spy()
    before = model[0].weight.detach().clone()
    fit(model, data(), callbacks=[spy], freeze="0.*", unfreeze_after=1, **OPTIONS)
    assert torch.equal(spy.weights[0]["0.weight"], before)  # epoch 1: frozen
    assert id(model[0].weight) not in spy.with_state[0] and id(model[0].weight) in spy.with_state[1]
    assert not torch.equal(spy.weights[1]["0.weight"], before)


def test_fine_tune_freezes_all_but_the_head_and_sets_the_epochs() -> None:
    model, spy = classifier(), Spy()
    before = model.state_dict()["3.weight"].clone()
    history = fit(model, data(), callbacks=[spy], fine_tune={"frozen_epochs": 2, "epochs": 1},
                  **(OPTIONS | {"epochs": 3}))
    assert len(history.records) == 3
    assert torch.equal(spy.weights[1]["3.weight"], before) and not torch.equal(spy.weights[2]["3.weight"], before)
    assert not torch.equal(spy.weights[0]["5.weight"], classifier().state_dict()["5.weight"])
    unset = {k: v for k, v in CONFIG.items() if k != "epochs"}
    config = resolve(unset | {"fine_tune": {"frozen_epochs": 1, "epochs": 4}})
    assert (config["epochs"], config["unfreeze_after"]) == (5, 1)
    with pytest.raises(ConfigError, match="epochs is 3; leave epochs out .* or make it 5"):
        fit(classifier(), data(), fine_tune={"frozen_epochs": 1, "epochs": 4}, **OPTIONS)


def test_a_fine_tune_plan_replaces_the_epochs_of_a_recipe_or_of_own_data_but_not_the_users(tmp_path: Path) -> None:
    plan = {"fine_tune.frozen_epochs": 1, "fine_tune.epochs": 2}
    config, _ = resolve_config("linear-regression", plan)  # the recipe says epochs: 100
    assert (config["epochs"], config["unfreeze_after"]) == (3, 1)
    rows = tmp_path / "rows.csv"
    rows.write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    config, notes = resolve_config({"name": "rows", "data": {"train": str(rows), "target": "y"}}, plan)
    assert config["epochs"] == 3 and "3 epochs" in notes[-1]  # not own data's budget of epochs
    with pytest.raises(ConfigError, match="but epochs is 7"):
        resolve_config("linear-regression", plan | {"epochs": 7})


@pytest.mark.parametrize(("options", "message"), [
    ({"freeze": ["features.*"]}, 'freeze pattern "features.\\*" matches no parameter'),
    ({"freeze": ["*"]}, "freeze matches every parameter"),
    ({"unfreeze_after": 1}, "unfreeze_after .* needs freeze"),
    ({"freeze": "0", "unfreeze_after": 3}, "unfreeze_after must be a number of epochs from 1 to epochs - 1"),
    ({"lr_groups": {"0.*": -1}}, "lr_groups maps parameter-name patterns to learning rates > 0"),
    ({"lr_groups": {"nope": 0.1}}, 'lr_groups pattern "nope" matches no parameter'),
    ({"lr_decay": 1.5}, "lr_decay must be in"),
    ({"fine_tune": {"frozen": 1}}, 'fine_tune has no option "frozen"'),
])
def test_bad_fine_tuning_options_are_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit(classifier(), data(), **(OPTIONS | options))


def test_lr_groups_and_lr_decay_give_each_part_its_rate() -> None:
    model = classifier()
    seen: list[Any] = []

    class Groups(Callback):
        def on_fit_start(self, state: Any) -> None:
            seen.append([(g["name"], g["lr"], len(g["params"])) for g in state.optimizer.param_groups])

    fit(model, data(), callbacks=[Groups()], lr_groups={"5.*": 0.1}, **(OPTIONS | {"epochs": 1}))
    assert seen[-1] == [("default", 0.01, 4), ("5.*", 0.1, 2)]
    history = fit(classifier(), data(), callbacks=[Groups()], lr_decay=0.5, **(OPTIONS | {"epochs": 1}))
    assert seen[-1] == [("5", 0.01, 2), ("3", 0.005, 2), ("0", 0.0025, 2)]
    assert history.records[0]["lr"] == 0.01  # the run's lr, the head's


def crash_resume(options: dict[str, Any], tmp_path: Path, model: Any = classifier) -> None:
    reference = model()
    expected = fit(reference, data(), **options)

    class Crash(Exception):
        pass

    class CrashAt(Callback):
        def on_batch_end(self, state: Any) -> None:
            if state.global_step == 11:  # in epoch 2 (8 steps an epoch)
                raise Crash

    with pytest.raises(Crash):
        fit(model(), data(), callbacks=[CrashAt(), Checkpointer(tmp_path, every=3)], **options)
    resumed = model()
    history = fit(resumed, data(), callbacks=[ResumeFrom(tmp_path)], **options)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()))
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h.records]  # noqa: E731
    assert strip(history) == strip(expected)


@pytest.mark.parametrize("changes", [
    {"freeze": ["0", "3"], "unfreeze_after": 2, "schedule": "onecycle"},
    {"fine_tune": {"frozen_epochs": 1, "epochs": 2}, "lr_groups": {"0.*": 0.001}},
    {"lr_decay": 0.7, "schedule": "cosine"},
])
def test_resume_is_exact_with_freezing_and_lr_groups(tmp_path: Path, changes: dict) -> None:
    crash_resume(OPTIONS | {"epochs": 3} | changes, tmp_path)


def test_init_loads_by_name_reinitialises_another_head_and_says_so(tmp_path: Path) -> None:
    source = classifier()
    torch.nn.init.constant_(source[0].weight, 0.5)
    weights = source.state_dict() | {"5.weight": torch.zeros(7, 8), "5.bias": torch.zeros(7),
                                     "extra.weight": torch.ones(2)}
    save_file(weights, tmp_path / "w.safetensors")
    target = classifier()
    head = target[5].weight.detach().clone()
    with pytest.warns(ZerogradWarning, match=r"loaded 4 tensors; skipped 2 of another shape.*5.weight: \[7, 8\]"):
        report = init_from(target, tmp_path / "w.safetensors")
    assert torch.equal(target[0].weight, source[0].weight) and torch.equal(target[5].weight, head)
    assert report.unused == ["extra.weight"] and len(report.resized) == 2
    with pytest.raises(WeightsMismatchError, match="does not fit this model"):
        init_from(nn.Linear(3, 3), tmp_path / "w.safetensors")


def test_torch_files_are_read_with_weights_only(tmp_path: Path) -> None:
    source = classifier()
    torch.save({"model_state_dict": source.state_dict(), "epoch": 3}, tmp_path / "ok.pt")
    target = classifier()
    torch.nn.init.zeros_(target[0].weight)
    init_from(target, tmp_path / "ok.pt")
    assert torch.equal(target[0].weight, source[0].weight)
    torch.save({"model": source}, tmp_path / "pickled.pt")  # a whole module: unpickling it would run code
    with pytest.raises(CheckpointError, match="weights_only=True and never unpickles") as refused:
        init_from(classifier(), tmp_path / "pickled.pt")
    # one readable line: the class it would unpickle, not torch's cut-off paragraph with terminal escapes
    assert "torch.nn.modules.container.Sequential" in str(refused.value)
    assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)


def test_a_run_initialised_from_another_records_it_and_the_summary_marks_frozen_layers(tmp_path: Path,
                                                                                         capsys) -> None:
    first = train(CONFIG | {"checkpoint_every": "off"}, out=tmp_path / "first", quiet=True)
    config = CONFIG | {"init": str(first.dir), "freeze": ["0"], "checkpoint_every": "off"}
    second = train(config, out=tmp_path / "second", quiet=True)
    assert second.summary["init"]["loaded"] == 6 and second.summary["init"]["new"] == []
    assert torch.equal(load_file(first.dir / "model.safetensors")["0.weight"],
                       load_file(second.dir / "model.safetensors")["0.weight"])
    table = (second.dir / "model_summary.txt").read_text()
    assert "frozen: 48 parameters" in table and " frozen" in table.splitlines()[2]
    counts = [line.split("frozen")[0].rstrip() for line in table.splitlines()[2:7]]  # 0 (frozen), tanh, 2, ...
    assert len({len(line) for line in counts}) == 1, counts  # the counts right-aligned in one column
    second_run = train(config | {"progress": "plain"}, out=tmp_path / "third")
    printed = [line for line in capsys.readouterr().out.splitlines() if line[:1].isdigit() and "[N," in line]
    assert len({len(line.split("frozen")[0].rstrip()) for line in printed}) == 1, printed
    assert second_run.summary["init"]["loaded"] == 6
    assert second.config["freeze"] == ["0"] and second.config["init"] == str(first.dir)  # recorded in the run
    command = ["train", "sinc-surface", "--set", "init=/nowhere", "--set", "epochs=1", "--out", str(tmp_path / "x")]
    assert cli(command) == 2
    assert "/nowhere does not exist" in capsys.readouterr().err


def digits_as_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits (another set, drawn and scanned differently), made like MNIST's images:
    the digit scaled to 20x20 in the middle of a 28x28 frame, ink 1 on 0."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    images = torch.nn.functional.pad(torch.nn.functional.interpolate(images, size=(20, 20), mode="bilinear"), [4] * 4)
    return images, torch.tensor(digits.target)


def test_a_model_fine_tuned_from_mnist_beats_the_same_model_from_scratch_on_a_few_hundred_digits(tmp_path) -> None:
    from zerograd.data.datasets import load_dataset

    mnist = load_dataset("mnist", train=True, normalize=False).tensors
    net = lambda: build_model({"name": "mlp", "sizes": [784, 128, 10]})  # noqa: E731
    torch.manual_seed(0)
    pretrained = net()
    fit(pretrained, (mnist[0][:12000], mnist[1][:12000]), epochs=1, batch_size=64, lr=0.002, optimizer="adam",
        threads=1, seed=0)
    save_file(pretrained.state_dict(), tmp_path / "mnist.safetensors")
    x, y = digits_as_mnist()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train_set, test_set = (x[order[:300]], y[order[:300]]), (x[order[300:]], y[order[300:]])
    accuracy = {}
    for side, extra in (("scratch", {}), ("fine-tuned", {"init": str(tmp_path / "mnist.safetensors")})):
        torch.manual_seed(1)
        history = fit(net(), train_set, eval_data=test_set, epochs=3, batch_size=32, lr=0.002, optimizer="adam",
                      threads=1, seed=1, **extra)
        accuracy[side] = history.records[-1]["test_accuracy"]
    assert accuracy["fine-tuned"] > accuracy["scratch"] + 0.02, accuracy  # measured: 0.876 vs 0.846


def test_each_lr_group_steps_at_its_own_rate() -> None:
    one_step = dict(epochs=1, batch_size=120, seed=5, threads=1, optimizer="sgd")
    start = classifier().state_dict()
    grouped, plain = classifier(), classifier()
    fit(grouped, data(), lr=0.01, lr_groups={"5.*": 0.1}, **one_step)
    fit(plain, data(), lr=0.1, **one_step)  # the same first gradient, all at 0.1
    moved = lambda model, name: model.state_dict()[name] - start[name]  # noqa: E731
    torch.testing.assert_close(moved(grouped, "5.weight"), moved(plain, "5.weight"))
    torch.testing.assert_close(moved(grouped, "0.weight"), moved(plain, "0.weight") / 10)


def test_a_library_model_without_its_library_is_one_clear_error() -> None:
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match='the model library "timm" is not installed; install it'):
            build_model({"name": "timm:resnet18", "num_classes": 10}, [3, 32, 32])
    else:
        model = build_model({"name": "timm:resnet18", "num_classes": 10}, [1, 32, 32])
        assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
