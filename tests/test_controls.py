"""Training controls end to end: validation split, gradient accumulation and clipping, precision,
torch.compile, seeds, device choice, and the config / --set names of all of them."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

import zerograd
from zerograd import accelerator
from zerograd import config as configs
from zerograd.callbacks import Callback
from zerograd.cli import main
from zerograd.data.loader import TensorLoader, split_validation
from zerograd.engine import fit
from zerograd.errors import ConfigError

CONTROL_KEYS = {
    "schedule": {"name": "cosine"},
    "val_split": 0.2,
    "early_stopping": {"monitor": "val_loss", "mode": "min", "patience": 2, "min_delta": 0.001},
    "accumulate": 2,
    "clip_grad_norm": 1.0,
    "clip_grad_value": 0.5,
    "precision": "bf16",
    "compile": False,
    "seed": 3,
    "device": "cpu",
}


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    """A recipe small enough for the CLI tests: the sinc surface on a 10 x 10 grid."""
    path = tmp_path / "tiny-sinc.yaml"
    path.write_text(yaml.safe_dump({
        "description": "tiny sinc", "data": {"dataset": "sinc", "n": 10},
        "model": {"name": "mlp", "sizes": [2, 16, 1], "activation_fn": "tanh", "flatten": False},
        "loss": "mse", "optimizer": "adam", "lr": 0.01, "batch_size": 20, "epochs": 3, "device": "cpu",
    }))
    return path


def mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 3))


def toy_data(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def weights_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# -- validation split ---------------------------------------------------------------------------

def rows(dataset) -> set[int]:
    return {int(v) for v in dataset.tensors[0][:, 0]}


def test_val_split_is_disjoint_covers_everything_and_is_reproducible_by_seed():
    x = torch.arange(100.0).unsqueeze(1)  # a sample's value is its row number
    data = (x, torch.zeros(100))
    train, val = split_validation(data, None, 0.2, seed=5)
    assert len(val) == 20 and len(train) == 80
    assert rows(train).isdisjoint(rows(val)) and rows(train) | rows(val) == set(range(100))
    again_train, again_val = split_validation(data, None, 0.2, seed=5)
    assert rows(again_val) == rows(val) and rows(again_train) == rows(train)
    assert rows(split_validation(data, None, 0.2, seed=6)[1]) != rows(val)


class RowDataset(Dataset):
    """A Dataset that is not in-memory tensors (goes through Subset, not TensorDataset)."""

    def __len__(self) -> int:
        return 30

    def __getitem__(self, index: int):
        return torch.tensor([float(index)]), torch.tensor(0.0)


def test_val_split_of_a_generic_dataset_is_disjoint_and_reproducible():
    train, val = split_validation(RowDataset(), None, 0.3, seed=1)
    assert len(val) == 9 and set(train.indices).isdisjoint(val.indices)
    assert split_validation(RowDataset(), None, 0.3, seed=1)[1].indices == val.indices


def test_fit_reports_val_metrics_beside_train_metrics():
    history = fit(mlp(), toy_data(), val_split=0.25, epochs=2, batch_size=12, device="cpu")
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert len(history[key]) == 2


def test_val_split_and_val_data_together_or_out_of_range_are_errors():
    with pytest.raises(ConfigError, match="either val_data or val_split"):
        fit(mlp(), toy_data(), val_data=toy_data(), val_split=0.2, device="cpu")
    with pytest.raises(ConfigError, match=r"val_split must be a fraction in \[0, 1\)"):
        fit(mlp(), toy_data(), val_split=1.5, device="cpu")
    with pytest.raises(ConfigError, match="empty training or validation set"):
        fit(mlp(), toy_data(n=3), val_split=0.1, device="cpu")


# -- gradient accumulation and clipping ---------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_k_accumulated_batches_of_b_update_like_one_batch_of_k_times_b(reduction):
    data = toy_data(n=48)
    loss = {"name": "cross_entropy", "reduction": reduction}
    options = dict(loss=loss, optimizer="sgd", lr=0.05, epochs=2, shuffle=False, device="cpu")
    big = mlp()
    fit(big, data, batch_size=12, **options)  # 4 updates per epoch
    accumulated = mlp()
    fit(accumulated, data, batch_size=3, accumulate=4, **options)  # 4 updates of 4 x 3 samples
    for a, b in zip(weights_of(big), weights_of(accumulated)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    small = mlp()  # control: the same small batches without accumulation take 16 steps and differ
    fit(small, data, batch_size=3, **options)
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(weights_of(big), weights_of(small)))


def one_sgd_step(**clip) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw gradient, update) of one full-batch SGD step with lr 1 from zero weights."""
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]])
    y = torch.tensor([[10.0], [-4.0]])
    probe = nn.Linear(3, 1, bias=False)
    nn.init.zeros_(probe.weight)
    nn.functional.mse_loss(probe(x), y).backward()
    model = nn.Linear(3, 1, bias=False)
    nn.init.zeros_(model.weight)
    fit(model, (x, y), loss="mse", optimizer="sgd", lr=1.0, batch_size=2, epochs=1, shuffle=False, device="cpu", **clip)
    return probe.weight.grad.clone(), -model.weight.detach().clone()


def test_clip_grad_norm_scales_the_update_down_to_the_norm():
    gradient, update = one_sgd_step(clip_grad_norm=1.0)
    assert gradient.norm() > 10
    assert update.norm() == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(update, gradient / gradient.norm(), rtol=1e-4, atol=1e-6)  # same direction
    gradient, update = one_sgd_step(clip_grad_norm=1000.0)  # above the norm: untouched
    torch.testing.assert_close(update, gradient)


def test_clip_grad_value_clamps_each_component():
    gradient, update = one_sgd_step(clip_grad_value=10.0)
    assert gradient.abs().max() > 10 and gradient.abs().min() < 10  # some components clipped, some not
    torch.testing.assert_close(update, gradient.clamp(-10.0, 10.0))


def test_clipping_values_must_be_positive():
    with pytest.raises(ConfigError, match="clip_grad_norm must be > 0"):
        fit(mlp(), toy_data(), clip_grad_norm=0, device="cpu")


# -- precision -----------------------------------------------------------------------------------

def test_fp16_on_cpu_is_a_clear_error():
    with pytest.raises(ConfigError, match='precision "fp16" needs a CUDA GPU .* on CPU use "bf16"'):
        fit(mlp(), toy_data(), precision="fp16", device="cpu")
    with pytest.raises(ConfigError, match='unknown precision "bf61"'):
        fit(mlp(), toy_data(), precision="bf61", device="cpu")


def test_fp16_on_cpu_from_the_cli_is_one_line_and_exit_2(tiny_yaml, tmp_path, capsys):
    code = main(["train", str(tiny_yaml), "--set", "precision=fp16", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "fp16" in err and "Traceback" not in err


def test_bf16_trains_and_runs_the_forward_pass_in_bfloat16():
    dtypes = []
    model = mlp()
    model[0].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    history = fit(model, toy_data(), precision="bf16", epochs=3, lr=0.01, batch_size=12, device="cpu")
    assert torch.bfloat16 in dtypes
    assert model[0].weight.dtype == torch.float32  # the weights stay fp32 (autocast, not .half())
    assert history["train_loss"][-1] < history["train_loss"][0]


@pytest.mark.slow
def test_bf16_reaches_fp32_accuracy_on_mnist_within_half_a_point(tmp_path):
    accuracy = {}
    for precision in ("fp32", "bf16"):
        run = zerograd.train("mnist-mlp", overrides={"epochs": 1, "batch_size": 100, "precision": precision},
                             out=tmp_path / precision, quiet=True)
        assert run.summary["precision"] == precision
        accuracy[precision] = run.summary["final"]["test_accuracy"]
    assert accuracy["fp32"] > 0.9
    assert abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.005


# -- torch.compile --------------------------------------------------------------------------------

class Final(Callback):
    state = None

    def on_fit_end(self, state) -> None:
        self.state = state


@pytest.mark.slow
def test_compile_true_trains_a_compiled_model():
    final = Final()
    x, y = toy_data(n=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(mlp(), (x, y), compile=True, epochs=2, lr=0.05, batch_size=16, device="cpu", callbacks=[final])
    assert not [w for w in caught if "torch.compile failed" in str(w.message)]
    assert isinstance(final.state.model, accelerator._CompiledOrEager) and not final.state.model._failed
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_a_failing_compile_falls_back_to_eager_with_a_clear_warning(monkeypatch):
    def broken_compile(module, *args, **kwargs):
        def run(*inputs, **kw):
            raise RuntimeError("inductor exploded: no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    compiled = mlp()
    with pytest.warns(UserWarning, match=r"torch.compile failed \(RuntimeError: inductor exploded.*training goes on "
                                         r"without compiling"):
        fit(compiled, toy_data(), compile=True, epochs=2, batch_size=12, device="cpu")
    eager = mlp()
    fit(eager, toy_data(), epochs=2, batch_size=12, device="cpu")
    for a, b in zip(weights_of(compiled), weights_of(eager)):
        assert torch.equal(a, b)  # the fallback trained exactly like eager


# -- reproducibility --------------------------------------------------------------------------------

def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not():
    def train(seed: int) -> list[torch.Tensor]:
        model = mlp(dropout=0.2)  # dropout masks and the shuffle order both come from the seed
        fit(model, toy_data(), seed=seed, epochs=2, batch_size=8, lr=0.05, val_split=0.25, device="cpu")
        return weights_of(model)

    first, second, other = train(7), train(7), train(8)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_same_seed_runs_from_a_config_write_identical_weights(tiny_yaml, tmp_path):
    runs = [zerograd.train(str(tiny_yaml), overrides={"seed": seed}, out=tmp_path / f"run{i}", quiet=True)
            for i, seed in enumerate([1, 1, 2])]
    state = [r.model.state_dict() for r in runs]
    assert all(torch.equal(state[0][k], state[1][k]) for k in state[0])
    assert not all(torch.equal(state[0][k], state[2][k]) for k in state[0])
    weights = [(tmp_path / f"run{i}" / "model.safetensors").read_bytes() for i in range(2)]
    assert weights[0] == weights[1]


# -- device ----------------------------------------------------------------------------------------

def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(accelerator, "_mps_available", lambda: True)
    assert accelerator.resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert accelerator.resolve_device("auto").type == "mps"
    monkeypatch.setattr(accelerator, "_mps_available", lambda: False)
    assert accelerator.resolve_device("auto").type == "cpu"


def test_the_run_says_which_device_auto_chose(tiny_yaml, tmp_path, capsys):
    run = zerograd.train(str(tiny_yaml), overrides={"device": "auto"}, out=tmp_path / "run")
    printed = capsys.readouterr().out
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert run.summary["device"].startswith(expected)
    assert f"on {run.summary['device']}" in printed
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["device"] == run.summary["device"]


def test_in_memory_data_is_moved_to_the_device_once_not_per_batch(monkeypatch):
    moves: list[int] = []
    original_to = TensorLoader.to

    def counting_to(self, device):
        moves.append(id(self))
        return original_to(self, device)

    monkeypatch.setattr(TensorLoader, "to", counting_to)

    class BatchesAreViews(Callback):
        """Records whether each training batch is a slice of the loader's resident tensors."""

        def __init__(self) -> None:
            self.views: list[bool] = []

        def on_fit_start(self, state) -> None:
            original = state.model.forward
            def forward(inputs):
                self.views.append(inputs.untyped_storage().data_ptr() in resident)
                return original(inputs)
            state.model.forward = forward

    resident: set[int] = set()
    original_iter = TensorLoader.__iter__

    def remember_storage(self):
        resident.add(self.tensors[0].untyped_storage().data_ptr())
        return original_iter(self)

    monkeypatch.setattr(TensorLoader, "__iter__", remember_storage)
    spy = BatchesAreViews()
    fit(mlp(), toy_data(), eval_data=toy_data(seed=1), val_split=0.25, epochs=3, batch_size=6, shuffle=False,
        device="cpu", callbacks=[spy])
    assert len(moves) == 3 and len(set(moves)) == 3  # train, val and test loaders: once each, for 3 epochs
    assert spy.views and all(spy.views)  # no batch was copied on its way to the model


# -- names: config keys, --set keys, summary ------------------------------------------------------------

def test_every_control_is_a_config_key_with_the_issue_names(tiny_yaml):
    for key, value in CONTROL_KEYS.items():
        assert key in configs.TRAIN_KEYS
        resolved = configs.resolve(str(tiny_yaml), {key: value})
        assert resolved[key] == value
    assert zerograd.FitOptions.from_kwargs(CONTROL_KEYS).accumulate == 2


@pytest.mark.parametrize(
    ("assignment", "key", "value"),
    [("schedule.name=onecycle", "schedule", {"name": "onecycle"}), ("schedule=exponential", "schedule", "exponential"),
     ("early_stopping.min_delta=0.01", "early_stopping", {"min_delta": 0.01}),
     ("early_stopping=true", "early_stopping", True),
     ("accumulate=4", "accumulate", 4), ("clip_grad_norm=0.5", "clip_grad_norm", 0.5),
     ("clip_grad_value=null", "clip_grad_value", None), ("precision=bf16", "precision", "bf16"),
     ("compile=true", "compile", True), ("seed=9", "seed", 9), ("device=cpu", "device", "cpu"),
     ("val_split=0.1", "val_split", 0.1)],
)
def test_every_control_is_a_set_key(tiny_yaml, assignment, key, value):
    overrides = dict([configs.parse_assignment(assignment)])
    assert configs.resolve(str(tiny_yaml), overrides)[key] == value


def test_bad_control_values_fail_before_training(tiny_yaml):
    for overrides, message in [({"schedule.name": "cosin"}, 'did you mean "cosine"'),
                               ({"early_stopping.patiense": 1}, 'did you mean "patience"'),
                               ({"accumulate": 0}, "accumulate must be > 0"),
                               ({"precision": "fp8"}, 'unknown precision "fp8"')]:
        with pytest.raises(ConfigError, match=message):
            configs.resolve(str(tiny_yaml), overrides)


def test_cli_schedule_early_stopping_and_val_split_end_to_end(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(tiny_yaml), "--set", "schedule.name=cosine", "--set", "early_stopping.patience=1",
                 "--set", "val_split=0.1", "--set", "epochs=4", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["schedule"] == {"name": "cosine"} and config["early_stopping"] == {"patience": 1}
    assert config["val_split"] == 0.1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val_loss" in r and "train_loss" in r for r in records)
    lrs = [r["lr"] for r in records]
    assert lrs[0] == pytest.approx(0.01) and all(a > b for a, b in zip(lrs, lrs[1:]))  # cosine decay
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "fp32"
    assert summary["stop_reason"] in ("completed", "early_stopping")
    best = min(records, key=lambda r: r["val_loss"])["epoch"]
    assert summary["best_epoch"] == best
    assert summary["final"]["val_loss"] == pytest.approx(min(r["val_loss"] for r in records))


def test_summary_says_which_epoch_was_best_and_that_training_stopped_early(tiny_yaml, tmp_path, capsys):
    # min_delta larger than any possible improvement: epoch 1 stays best, epoch 2 ends the run.
    out = tmp_path / "run"
    code = main(["train", str(tiny_yaml), "--set", "val_split=0.2", "--set", "epochs=10",
                 "--set", "early_stopping={monitor: val_loss, patience: 1, min_delta: 1000}", "--out", str(out),
                 "--quiet"])
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["stop_reason"] == "early_stopping" and summary["best_epoch"] == 1
    assert summary["epochs_completed"] == 2 and len(records) == 2
    assert summary["final"]["val_loss"] == pytest.approx(records[0]["val_loss"])  # the restored epoch's figures
    assert "stopped early after epoch 2" in printed and "best epoch, 1" in printed
    model, _ = zerograd.load_run(out)  # the saved weights are epoch 1's: they reproduce its val loss
    _, val = split_validation(zerograd.api.build_data({"dataset": "sinc", "n": 10}).train, None, 0.2, 0)
    recomputed = zerograd.evaluate(model, val, loss="mse", device="cpu")["loss"]
    assert recomputed == pytest.approx(records[0]["val_loss"], rel=1e-5)
