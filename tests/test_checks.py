"""The pre-flight check: each classic mistake gets one clear, actionable message (a DataError /
ConfigError in the API, one line and exit code 2 on the CLI), and a failed check damages nothing."""
from __future__ import annotations

import gzip
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from zerograd import fit
from zerograd.api import train
from zerograd.callbacks import Callback
from zerograd.cli import main as cli
from zerograd.data import write_idx
from zerograd.errors import DataError, ZerogradWarning


def images(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def mlp(*sizes: int, flatten: bool = False, end: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()] if flatten else []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers, *([end] if end is not None else []))


def fails(match: str, model: nn.Module, data: Any, error: type[Exception] = DataError, **options: Any) -> str:
    with pytest.raises(error, match=match) as caught:
        fit(model, data, epochs=1, batch_size=16, **options)
    return str(caught.value)


def test_images_into_a_linear_layer_say_flatten() -> None:
    message = fails("flatten", mlp(784, 10), images())
    assert "[1, 28, 28] per sample" in message and "Linear(784, 10)" in message and "x.view(-1, 784)" in message


def test_inputs_of_the_wrong_width_name_both_sizes() -> None:
    message = fails("5 values per sample", mlp(8, 3), (torch.randn(40, 5), torch.randint(0, 3, (40,))))
    assert "Linear(8, 3)" in message and "sizes: [5, ...]" in message


def test_flat_rows_into_a_conv_layer_say_reshape() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    fails(r"Conv2d.*reshape them \(e.g. x.view\(-1, 1, 28, 28\)", model,
          (torch.rand(32, 784), torch.randint(0, 10, (32,))))


def test_integer_images_say_convert_to_float() -> None:
    pixels = (images()[0] * 255).to(torch.uint8)  # (X, y) arrays are converted; a Dataset is taken as it is
    fails(r"uint8.*x.float\(\)", mlp(784, 10, flatten=True), TensorDataset(pixels, images()[1]))


def test_labels_beyond_the_output_width_say_how_wide_the_last_layer_must_be() -> None:
    x, y = images()
    message = fails("labels go up to 9", mlp(784, 5, flatten=True), (x, y))
    assert "10 classes" in message and "outputs 5 scores" in message and "10 wide" in message


def test_a_label_out_of_range_anywhere_in_the_data_is_found_not_only_in_the_first_batch() -> None:
    x, y = images(200)
    y = y.clamp(max=8)
    y[190] = 9  # far beyond the first batch
    fails("labels go up to 9", mlp(784, 9, flatten=True), (x, y))


def test_negative_labels_name_the_sample() -> None:
    x, y = images()
    y[7] = -1
    fails(r"there is a label -1 \(sample 7\)", mlp(784, 10, flatten=True), (x, y))


def test_float_labels_for_cross_entropy_say_long() -> None:
    x, y = images()
    fails(r"integers \(int64\).*float32; convert them with y.long\(\)", mlp(784, 10, flatten=True), (x, y.float()))


def test_fractional_targets_for_cross_entropy_point_to_a_regression_loss() -> None:
    fails("loss: mse", mlp(8, 3), (torch.randn(40, 8), torch.rand(40)))


@pytest.mark.parametrize("dtype", [torch.long, torch.float32])
def test_one_hot_targets_for_nll_say_argmax(dtype: torch.dtype) -> None:
    x, y = images()
    one_hot = nn.functional.one_hot(y, 10).to(dtype)
    fails(r"argmax\(dim=1\)", mlp(784, 10, flatten=True, end=nn.LogSoftmax(dim=1)), (x, one_hot), loss="nll")


def test_soft_labels_for_cross_entropy_are_accepted() -> None:
    x, y = images()
    fit(mlp(784, 10, flatten=True), (x, nn.functional.one_hot(y, 10).float()), epochs=1, batch_size=16)


class LabelledImages(TensorDataset):
    classes = [str(i) for i in range(10)]


def test_output_width_must_match_the_data_sets_classes() -> None:
    x, y = images()
    y = y.clamp(max=7)  # the labels alone would fit 8 outputs
    fails("the data set has 10 classes but the model outputs 8", mlp(784, 8, flatten=True), LabelledImages(x, y))


def test_more_outputs_than_the_labels_use_is_a_warning() -> None:
    x, y = torch.randn(60, 8), torch.randint(0, 3, (60,))
    with pytest.warns(ZerogradWarning, match="labels only use 0..2"):
        fit(mlp(8, 10), (x, y), epochs=1, batch_size=16)


def test_n_targets_against_n_by_1_outputs_under_mse_is_an_error_not_a_silent_broadcast() -> None:
    x = torch.randn(50, 3)
    message = fails(r"would broadcast them to \[16, 16\]", mlp(3, 1), (x, x.sum(dim=1)), loss="mse")
    assert "y.view(-1, 1)" in message
    assert "a NumPy array or pandas Series y: numpy.asarray(y).reshape(-1, 1)" in message  # the view is torch's only


def test_n_by_1_targets_against_n_outputs_is_an_error_too() -> None:
    class Squeezed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x).squeeze(1)

    x = torch.randn(50, 3)
    fails(r"y.view\(-1\)", Squeezed(), (x, x.sum(dim=1, keepdim=True)), loss="l1")


def test_class_labels_for_mse_say_which_loss_to_use() -> None:
    fails("for classification use loss: cross_entropy", mlp(3, 1), (torch.randn(40, 3), torch.randint(0, 2, (40, 1))),
          loss="mse")


def test_log_softmax_then_cross_entropy_is_a_warning_and_training_goes_on() -> None:
    x, y = images()
    with pytest.warns(ZerogradWarning, match="double softmax.*loss: nll"):
        history = fit(mlp(784, 10, flatten=True, end=nn.LogSoftmax(dim=1)), (x, y), epochs=1, batch_size=16)
    assert len(history) == 1


def test_raw_scores_into_nll_is_a_warning() -> None:
    x, y = images()
    with pytest.warns(ZerogradWarning, match="nll expects log-probabilities"):
        fit(mlp(784, 10, flatten=True), (x, y), epochs=1, batch_size=16, loss="nll")


def test_nan_or_inf_inputs_name_the_first_bad_sample() -> None:
    x, y = images(100)
    x[42, 0, 3, 3] = float("nan")
    x[77, 0, 0, 0] = float("inf")
    message = fails("contain 2 NaN/Inf values", mlp(784, 10, flatten=True), (x, y))
    assert "sample 42" in message and "torch.isfinite" in message


def test_float64_inputs_are_converted_with_a_note() -> None:
    x, y = np.random.default_rng(0).normal(size=(60, 8)), np.arange(60) % 3
    with pytest.warns(ZerogradWarning, match="float64.*converted them to float32"):
        fit(mlp(8, 3), (x, y), epochs=1, batch_size=16)
    with pytest.warns(ZerogradWarning, match="float64.*converted it to float32"):
        fit(mlp(8, 3), TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), epochs=1, batch_size=16)


def test_an_empty_data_set_is_an_error() -> None:
    fails("empty", mlp(8, 3), (torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)))

    class Empty(Dataset):
        def __len__(self) -> int:
            return 0

    fails("empty", mlp(8, 3), Empty())


def test_a_batch_larger_than_the_data_set_is_an_error() -> None:
    message = fails("batch_size 16 is larger than the training set", mlp(8, 3),
                    (torch.randn(10, 8), torch.zeros(10, dtype=torch.long)))
    assert "batch_size 10 or less" in message
    message = fails("batch_size 16 is larger than the training set", mlp(8, 3),
                    (torch.randn(1, 8), torch.zeros(1, dtype=torch.long)))
    assert "the training set (1 sample)," in message  # was "(1 samples)"


def test_a_dataset_that_fails_to_read_names_the_sample() -> None:
    class Broken(Dataset):
        def __len__(self) -> int:
            return 40

        def __getitem__(self, index: int) -> Any:
            if index == 3:
                raise OSError("disk on fire")
            return torch.zeros(8), 0

    fails("reading training sample 3 failed: OSError: disk on fire", mlp(8, 3), Broken())


def test_the_check_does_not_change_what_training_computes() -> None:
    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))

    x, y = torch.randn(80, 8), torch.randint(0, 3, (80,))
    checked, unchecked = model(), model()
    fit(checked, (x, y), epochs=2, batch_size=16, preflight=True)
    fit(unchecked, (x, y), epochs=2, batch_size=16, preflight=False)
    for a, b in zip(checked.state_dict().values(), unchecked.state_dict().values()):
        assert torch.equal(a, b)  # BatchNorm statistics included: the look-ahead ran in eval mode


def test_preflight_false_skips_the_check() -> None:
    x = torch.randn(50, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own broadcast warning: this is the mistake the check prevents
        fit(mlp(3, 1), (x, x.sum(dim=1)), epochs=1, batch_size=16, loss="mse", preflight=False)


# ----------------------------------------------------------------------------------------------
# Through the CLI: exit code 2, one line on stderr, and nothing written before is damaged

def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli(args)
    return code, capsys.readouterr().err.strip()


def tree(path: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}


def fake_mnist(root: Path, n: int = 120) -> Path:
    generator = np.random.default_rng(0)
    folder = root / "mnist"
    for prefix, count in (("train", n), ("t10k", n // 2)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz",
                  generator.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", generator.integers(0, 10, count, dtype=np.uint8))
    return folder


MNIST_RUN = {"data": {"dataset": "mnist", "root": "DATA", "download": False},
             "model": {"name": "mlp", "sizes": [784, 16, 10]},
             "epochs": 2, "batch_size": 20, "checkpoint_every": 3, "threads": 1, "plots": False, "progress": "none"}


class StopAfter(Callback):
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_batch_end(self, state: Any) -> None:
        if state.global_step == self.steps:
            raise KeyboardInterrupt


@pytest.mark.parametrize("damage", ["bad magic", "truncated gzip", "count mismatch"])
def test_corrupt_data_files_are_one_line_errors_and_the_interrupted_run_is_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    folder = fake_mnist(tmp_path / "data")
    config = json.loads(json.dumps(MNIST_RUN).replace("DATA", str(tmp_path / "data")))
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # a run with checkpoints, stopped hard
        train(config, out=run_dir, quiet=True, callbacks=[StopAfter(7)])
    before = tree(run_dir)
    assert any(p.parent.parent.name == "checkpoints" for p in before)

    images_file = folder / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images_file.read_bytes())
    if damage == "bad magic":
        images_file.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
    elif damage == "truncated gzip":
        images_file.write_bytes(images_file.read_bytes()[: len(images_file.read_bytes()) // 2])
    else:
        write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(119, dtype=np.uint8))

    code, err = run_cli(["resume", str(run_dir), "--quiet"], capsys)
    assert code == 2 and err.startswith("zerograd: error: ") and len(err.splitlines()) == 1, err
    assert {"bad magic": "magic", "truncated gzip": "gzip", "count mismatch": "120 images but"}[damage] in err
    assert tree(run_dir) == before


def test_a_model_that_does_not_fit_the_data_fails_before_a_run_directory_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_mnist(tmp_path / "data")
    config = json.loads(json.dumps(MNIST_RUN).replace("DATA", str(tmp_path / "data")))
    config["model"]["flatten"] = False
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    code, err = run_cli(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "flatten" in err and "x.view(-1, 784)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("setting", "message"), [
    ("--set=learning_rate=0.1", 'unknown --set key "learning_rate"'),
    ("--set=epocs=2", 'did you mean "epochs"'),
    ("--set=batch_size=ten", "batch_size must be int"),
    ("--set=lr=-0.1", "lr must be > 0"),
    ("--set=epochs=0", "epochs must be > 0"),
    ("--set=batch_size=0", "batch_size must be > 0"),
    ("--set=on_nan=ignore", 'on_nan must be "error"'),
])
def test_config_mistakes_are_one_line_errors_that_write_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str) -> None:
    code, err = run_cli(["train", "linear-regression", setting, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_csv_and_image_folder_errors_surface_as_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # (a text column is read as categories and a missing input is filled in, with notes: not errors)
    for content, message in (("a,b,label\n1,2,0\n3,4\n5,6,0\n7,8,1\n", "line 3: 2 values but the header names 3"),
                             ("a,b,label\n1,2,0\n3,4,\n5,6,0\n7,8,1\n", "the target is missing in 1 rows")):
        (tmp_path / "t.csv").write_text(content)
        code, err = run_cli(["train", "--data", str(tmp_path / "t.csv"), "--target", "label", "--out",
                             str(tmp_path / "r1")], capsys)
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "r1").exists()
    for name in ("cats", "dogs"):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "img" / name / f"{i}.png").write_bytes(b"not a png")
    code, err = run_cli(["train", "--data", str(tmp_path / "img"), "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and ".png" in err and len(err.splitlines()) == 1, err


def test_warnings_print_as_one_line_on_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = {"data": {"dataset": "sinc", "n": 10}, "model": {"name": "mlp", "sizes": [2, 8, 1], "flatten": False},
              "loss": "mse", "epochs": 1, "batch_size": 10, "plots": False, "progress": "none"}
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config | {"checkpoint_every": 2}, out=run_dir, quiet=True, callbacks=[StopAfter(3)])
    shutil.rmtree(run_dir / "checkpoints")
    code, err = run_cli(["resume", str(run_dir), "--quiet"], capsys)
    assert code == 0 and "zerograd: warning: no checkpoint in" in err
