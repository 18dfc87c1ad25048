"""Issue 17's techniques: mixup / cutmix, test-time augmentation, k-fold cross-validation and
profiling: each changes what it claims, and checkpoint/resume stays exact with it on."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from zerograd import cli, cross_validate, fit, predictor, runs
from zerograd.accelerator import Accelerator
from zerograd.api import evaluate_run, resume, train
from zerograd.callbacks import Callback
from zerograd.data.folds import fold_numbers, split_fold
from zerograd.engine import evaluate, run_fit
from zerograd.errors import ConfigError, DataError
from zerograd.mixing import BatchMixer
from zerograd.profiling import SECTIONS, ProfileReport
from zerograd.sweep import sweep
from zerograd.tta import TTAModel, tta_views

# ----------------------------------------------------------------------------- mixup / cutmix


def mixer(mixup: float | None, cutmix: float | None, model: nn.Module) -> BatchMixer:
    return BatchMixer(mixup, cutmix, seed=0, rank=0, model=model, acc=Accelerator.create("cpu", "fp32"))


def test_mixup_blends_inputs_and_targets_with_the_same_weight() -> None:
    labels = torch.arange(16) % 3
    one_hot = nn.functional.one_hot(labels, 3).float()
    mix = mixer(0.4, None, nn.Linear(3, 3))
    # inputs equal to the one-hot targets: the mixed inputs must then equal the mixed targets
    inputs, targets = mix(one_hot.clone(), labels, 0, 0)
    assert targets.shape == (16, 3) and torch.allclose(targets.sum(1), torch.ones(16))
    assert not torch.equal(targets, one_hot)  # the targets changed: soft, not the labels
    assert torch.allclose(inputs, targets)
    again, other = mix(one_hot.clone(), labels, 0, 0), mix(one_hot.clone(), labels, 0, 1)
    assert torch.equal(again[1], targets) and not torch.equal(other[1], targets)  # per (epoch, batch), repeatable


def test_cutmix_targets_are_the_share_of_each_image_pasted() -> None:
    labels = torch.arange(16) % 3
    # each image is its one-hot label in every pixel: a mixed image's mean colour is its soft target
    images = nn.functional.one_hot(labels, 3).float()[:, :, None, None].expand(16, 3, 8, 8).contiguous()
    inputs, targets = mixer(None, 1.0, nn.Sequential(nn.Flatten(), nn.Linear(192, 3)))(images, labels, 0, 0)
    assert not torch.equal(inputs, images)
    assert torch.allclose(inputs.mean((2, 3)), targets, atol=1e-6)


def test_mixing_is_refused_where_it_cannot_work() -> None:
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    with pytest.raises(ConfigError, match="mixup mixes the targets"):
        fit(nn.Linear(4, 1), (x, y), loss="mse", mixup=0.2, epochs=1)
    with pytest.raises(ConfigError, match="alpha must be a number > 0"):
        fit(nn.Linear(4, 2), (x, y.long().abs()), mixup={"alpha": -1}, epochs=1)
    with pytest.raises(DataError, match="cutmix pastes boxes of images"):
        fit(nn.Linear(4, 2), (x, (x[:, 0] > 0).long()), cutmix=True, epochs=1, batch_size=8, threads=1)


def classification_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def small_classifier() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_fit_with_mixup_trains_on_mixed_batches_and_names_the_train_accuracy_so() -> None:
    options = dict(epochs=2, batch_size=16, lr=0.01, metrics=["accuracy"], threads=1)
    plain_model, mixed_model = small_classifier(), small_classifier()
    plain = fit(plain_model, classification_data(), **options)
    mixed = fit(mixed_model, classification_data(), mixup=0.4, **options)
    assert "train_accuracy" in plain.records[-1] and "train_accuracy_mixed" not in plain.records[-1]
    assert "train_accuracy_mixed" in mixed.records[-1] and "train_accuracy" not in mixed.records[-1]
    assert 0.0 <= mixed.records[-1]["train_accuracy_mixed"] <= 1.0
    assert not torch.equal(plain_model[0].weight, mixed_model[0].weight)


# ----------------------------------------------------------------------------- test-time augmentation


def test_tta_averages_the_class_probabilities_of_the_views() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    images = torch.randn(5, 3, 4, 4)
    views = tta_views({"flip": True}, None)
    assert len(views) == 2
    want = (model(images).softmax(-1) + model(images.flip(-1)).softmax(-1)) / 2
    got = TTAModel(model, views, "classification")(images).softmax(-1)
    assert torch.allclose(got, want, atol=1e-6)
    assert len(tta_views(True, (4, True))) == 10  # the image and 4 shifts, each mirrored too
    x, y = torch.randn(20, 3, 4, 4), torch.randint(0, 3, (20,))
    assert evaluate(model, (x, y), tta={"flip": True})["loss"] != evaluate(model, (x, y))["loss"]


def test_tta_without_views_to_average_is_one_clear_error() -> None:
    x, y = torch.randn(20, 3, 4, 4), torch.randint(0, 3, (20,))
    with pytest.raises(ConfigError, match="this data has none"):
        evaluate(nn.Sequential(nn.Flatten(), nn.Linear(48, 3)), (x, y), tta=True)
    with pytest.raises(ConfigError, match='tta has no option "flips"'):
        fit(nn.Linear(4, 2), (torch.randn(8, 4), torch.zeros(8).long()), tta={"flips": True}, epochs=1)


# ----------------------------------------------------------------------------- runs on an image folder

def image_config(folder: Path, **changes: Any) -> dict[str, Any]:
    # 60 images: 48 train (3 batches of 16), 12 test; dropout makes the RNG state matter
    return {"name": "shapes", "data": {"images": str(folder), "augment": {"flip": True, "crop": 2}},
            "model": [{"conv2d": 4}, "relu", {"maxpool2d": 2}, {"dropout": 0.2}, {"linear": 3}], "epochs": 3,
            "lr": 0.01, "batch_size": 16, "device": "cpu", "threads": 1, "progress": "none", "plots": False,
            "checkpoint_every": 2, "log_every": 0} | changes


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, state: Any) -> None:
        if state.global_step == self.step:
            raise Crash


def epoch_lines(run_dir: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records if r.get("kind", "epoch") == "epoch"]


@pytest.mark.parametrize("changes", [{"mixup": 0.4}, {"cutmix": 1.0, "mixup": 0.2}, {"tta": True},
                                     {"profile": True}, {"cv": {"folds": 3, "fold": 2}}],
                         ids=["mixup", "cutmix+mixup", "tta", "profile", "cv-fold"])
def test_a_crashed_run_resumes_exactly_with_each_technique_on(shapes_folder: Path, tmp_path: Path,
                                                              changes: dict[str, Any]) -> None:
    config = image_config(shapes_folder, **changes)
    train(config, out=tmp_path / "reference", quiet=True)
    with pytest.raises(Crash):  # after step 5: the checkpoint of step 4 is mid-epoch 2
        train(config, out=tmp_path / "run", quiet=True, callbacks=[CrashAt(5)])
    resume(tmp_path / "run", quiet=True)
    want, got = (load_file(tmp_path / name / "model.safetensors") for name in ("reference", "run"))
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert epoch_lines(tmp_path / "run") == epoch_lines(tmp_path / "reference")


def test_evaluate_and_predict_with_tta_use_the_runs_augmentation(shapes_folder: Path, tmp_path: Path) -> None:
    run = train(image_config(shapes_folder, checkpoint_every=None), out=tmp_path / "run", quiet=True)
    plain, viewed = evaluate_run(run.dir), evaluate_run(run.dir, tta=True)
    assert plain["test_loss"] == pytest.approx(run.summary["final"]["test_loss"], rel=1e-5)
    assert viewed["test_loss"] != plain["test_loss"]
    image = next((shapes_folder / "circle").iterdir())
    without = predictor.load(run.dir).predict_proba(image)
    with_tta = predictor.load(run.dir, tta=True).predict_proba(image)
    assert with_tta.sum() == pytest.approx(1.0, abs=1e-5) and not np.allclose(with_tta, without)


# ----------------------------------------------------------------------------- cross-validation


def test_the_folds_partition_the_training_rows_stratified_by_class() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 23)
    rows = torch.arange(103).float()[:, None]
    dataset = torch.utils.data.TensorDataset(rows, labels)
    seen: list[int] = []
    for fold in range(1, 6):
        train_part, val_part, note = split_fold(dataset, {"folds": 5, "fold": fold, "seed": 0})
        val_rows = {int(r) for r in val_part.tensors[0][:, 0]}
        train_rows = {int(r) for r in train_part.tensors[0][:, 0]}
        assert val_rows.isdisjoint(train_rows) and val_rows | train_rows == set(range(103))
        assert len(val_rows) in (20, 21) and "stratified by class" in note
        counts = torch.bincount(val_part.tensors[1], minlength=3).tolist()
        assert all(abs(c - n / 5) < 1 for c, n in zip(counts, (50, 30, 23)))  # each class in its share
        seen += sorted(val_rows)
    assert sorted(seen) == list(range(103))  # every row validated exactly once
    assert not np.array_equal(fold_numbers(103, 5, 0), fold_numbers(103, 5, 1))  # the fold seed matters


def test_cross_validate_trains_one_run_per_fold_and_summarises(shapes_folder: Path, tmp_path: Path) -> None:
    config = image_config(shapes_folder, epochs=2, checkpoint_every=None)
    result = cross_validate(config, folds=3, out=tmp_path / "cv", quiet=True)
    assert result.metric == "val_accuracy" and len(result.runs) == 3
    values = result.summary["val_accuracy"]["values"]
    assert result.mean == pytest.approx(statistics.fmean(values)) and result.std == pytest.approx(
        statistics.stdev(values))
    saved = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert saved["status"] == "complete" and [r["dir"] for r in saved["runs"]] == ["fold1", "fold2", "fold3"]
    assert (tmp_path / "cv" / "cv.md").read_text().startswith("| metric | mean ± std | fold 1 |")
    assert (tmp_path / "cv" / "plots" / "cv.png").is_file()
    sizes = [(tmp_path / "cv" / f"fold{k}" / "model_summary.txt").read_text().split("data: ")[1].split()
             for k in (1, 2, 3)]
    assert [int(s[s.index("val") + 1]) for s in sizes] == [16, 16, 16]  # the 48 training images, a third each
    assert [int(s[s.index("train") + 1]) for s in sizes] == [32, 32, 32]
    assert [runs.read_config(tmp_path / "cv" / f"fold{k}")["cv"] for k in (1, 2, 3)] == [
        {"folds": 3, "fold": k, "seed": 0} for k in (1, 2, 3)]


def test_cv_and_a_sweep_of_own_data_that_names_no_model_train_the_model_zerograd_train_would(
        shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cv", "--data", str(shapes_folder), "--folds", "2", "--epochs", "1", "--batch-size", "8",
                     "--quiet", "--out", str(tmp_path / "cv")]) == 0
    assert runs.read_config(tmp_path / "cv" / "fold2")["model"][-1] == {"linear": 3}  # own data's small CNN
    command = json.loads((tmp_path / "cv" / "cv.json").read_text())["command"]
    assert command.startswith(f"zerograd cv --data {shapes_folder} --folds 2 ")  # one that runs it again
    path = tmp_path / "shapes.yaml"
    # a config that names only its data (and the run's length)
    path.write_text(yaml.safe_dump({"data": {"images": str(shapes_folder)}, "epochs": 1, "batch_size": 8}))
    assert cli.main(["sweep", str(path), "--grid", "lr=0.01", "--cv", "2", "--quiet",
                     "--out", str(tmp_path / "sweep")]) == 0
    assert "error" not in capsys.readouterr().err


def test_zerograd_cv_refuses_a_single_fold_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["cv", "mnist-mlp", "--folds", "1"]) == 2
    assert capsys.readouterr().err.strip() == "zerograd: error: --folds must be a whole number >= 2, got 1"


def test_more_folds_than_samples_is_one_error_before_anything_trains(shapes_folder: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump(image_config(shapes_folder)))
    assert cli.main(["cv", str(path), "--folds", "49", "--out", str(tmp_path / "cv")]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == ("zerograd: error: 49-fold cross-validation needs at least 49 training samples, "
                                    "the data has 48; use fewer folds")
    assert "fold1" not in captured.out and not (tmp_path / "cv").exists()
    assert cli.main(["sweep", str(path), "--grid", "lr=0.1", "--cv", "49", "--out", str(tmp_path / "sweep")]) == 2
    assert "the data has 48" in capsys.readouterr().err and not (tmp_path / "sweep").exists()


# ----------------------------------------------------------------------------- profiling


def test_profile_json_sections_add_up_to_the_wall_time(shapes_folder: Path, tmp_path: Path) -> None:
    run = train(image_config(shapes_folder, profile=True, val_split=0.25), out=tmp_path / "run", quiet=True)
    figures = json.loads((tmp_path / "run" / "profile.json").read_text())
    sections = {name: entry["seconds"] for name, entry in figures["sections"].items()}
    assert set(sections) == set(SECTIONS) | {"other"}
    assert all(seconds >= 0 for seconds in sections.values()) and sections["forward"] > 0
    assert sum(sections.values()) == pytest.approx(figures["wall_seconds"], abs=1e-4)
    assert figures["batches"] == 3 * 3 and figures["traced_batches"] == 5  # 36 training images, batch 16
    trace = json.loads((tmp_path / "run" / "profile" / "trace.json").read_text())
    assert any(event.get("name") == "zerograd.forward" for event in trace["traceEvents"])
    assert run.profile is not None and run.profile.batches == 9


def test_profiling_changes_nothing_it_measures_and_is_off_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    plain_model, profiled_model = small_classifier(), small_classifier()
    plain = run_fit(plain_model, classification_data(), epochs=2, batch_size=16, threads=1)
    profiled = run_fit(profiled_model, classification_data(), epochs=2, batch_size=16, threads=1, profile=True)
    assert plain.profile is None and profiled.profile is not None
    assert all(torch.equal(a, b) for a, b in zip(plain_model.state_dict().values(),
                                                  profiled_model.state_dict().values()))


def test_a_sweep_with_cv_ranks_by_the_mean_over_the_folds(shapes_folder: Path, tmp_path: Path) -> None:
    config = image_config(shapes_folder, epochs=1, checkpoint_every=None)
    result = sweep(config, grid=["lr=0.01,0.3"], cv=2, out=tmp_path / "sweep", quiet=True)
    assert result.metric == "val_accuracy" and len(result.runs) == 4
    for ranked in result.configs:
        assert sorted(Path(r).name.rsplit("-", 1)[1] for r in ranked.runs) == ["fold1", "fold2"]
        folds = [json.loads((tmp_path / "sweep" / Path(r).name / "summary.json").read_text())["final"]["val_accuracy"]
                 for r in ranked.runs]
        assert ranked.mean == pytest.approx(statistics.fmean(folds))
    assert "cv" not in yaml.safe_load((tmp_path / "sweep" / "best.yaml").read_text())  # trains on all the data
    with pytest.raises(ConfigError, match="--cv must be a whole number >= 2"):
        sweep(config, grid=["lr=0.01"], cv=1, out=tmp_path / "other", quiet=True)


def test_the_cli_prints_the_profile_and_runs_a_cross_validation(shapes_folder: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shapes.yaml"
    path.write_text(yaml.safe_dump(image_config(shapes_folder, epochs=1, checkpoint_every=None)))
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run"), "--profile"]) == 0
    out = capsys.readouterr().out
    assert "where the time went" in out and "backward" in out and "profile.json" in out
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["profile"] is True
    assert cli.main(["cv", str(path), "--folds", "2", "--jobs", "2", "--out", str(tmp_path / "cv")]) == 0
    out = capsys.readouterr().out
    assert "2-fold cross-validation" in out and "cross-validated val_accuracy" in out
    assert cli.main(["cv", str(path), "--folds", "2", "--out", str(tmp_path / "cv"), "--quiet"]) == 0  # resumes
    assert "(done before)" not in capsys.readouterr().out  # --quiet: the table only
    assert cli.main(["evaluate", str(tmp_path / "run"), "--tta"]) == 0
    assert capsys.readouterr().out.startswith("test_loss ")
    fit(small_classifier(), classification_data(), epochs=1, batch_size=16, threads=1, profile=True)
    assert "where the time went" in capsys.readouterr().out  # fit returns the history only: it prints the table


def test_ms_per_batch_leaves_the_traced_batches_out() -> None:
    report = ProfileReport(2.0, {"data": 0.5, "forward": 1.0, "traced steps": 0.3, "other": 0.2}, batches=15,
                           device="cpu", synchronized=False, traced_batches=5)
    rows = {name: per for name, _, _, per in report.rows()}
    assert rows["data"] == pytest.approx(50.0) and rows["forward"] == pytest.approx(100.0)  # over the 10 timed
    assert rows["traced steps"] is None and rows["other"] is None
