"""The run directory: everything a training run leaves behind, as plain files.

    RUN_DIR/config.yaml         the fully resolved config (trains the same run again)
    RUN_DIR/metrics.jsonl       one JSON line per epoch, written as the epoch ends (and every
                                `log_every` steps a line with "kind": "step"; load_history skips them)
    RUN_DIR/metrics.csv         the epoch records as CSV (steps.csv: the step records)
    RUN_DIR/model.safetensors   the trained weights (no pickle)
    RUN_DIR/summary.json        final metrics, epochs completed, time, best epoch, stop reason
    RUN_DIR/preprocessing.json  how raw inputs become model inputs (scaling, image size, classes)
    RUN_DIR/model_summary.txt   layers, output shapes, parameter counts and data sizes
    RUN_DIR/plots/*.png         the run's plots (see zerograd.reporting.plots)
    RUN_DIR/profile.json        with `profile: true`: where the time went (see zerograd.profiling),
    RUN_DIR/profile/trace.json  and a torch.profiler trace of a few steps (Perfetto, chrome://tracing)
"""
from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save
from torch import nn

from zerograd import config as configs
from zerograd.callbacks.checkpointing import NEUTRAL_OPTIONS
from zerograd.callbacks.loggers import FINISHED, RunInfo, RunLogger
from zerograd.checkpoint_format import CHECKPOINTS, checkpoint_dirs
from zerograd.config import dump
from zerograd.distributed import WorkerEnv
from zerograd.errors import ConfigError, DataError, RunDirError, UntrustedCodeError, WeightsMismatchError, WriteError
from zerograd.files import load_safetensors, to_plain, write_atomic, writing, yaml_load, yaml_problem
from zerograd.models import build_model, weights_mismatch
from zerograd.options import FitOptions
from zerograd.profiling import ProfileReport
from zerograd.signals import StopSignal
from zerograd.state import History

CONFIG, METRICS, WEIGHTS, SUMMARY = "config.yaml", "metrics.jsonl", "model.safetensors", "summary.json"
PREPROCESSING = "preprocessing.json"  # how raw inputs become model inputs (see zerograd.predictor)
PROFILE, TRACE = "profile.json", "profile/trace.json"  # `profile: true` (see zerograd.profiling)
SPLIT = "split.json"  # own data: which rows (files) trained, validated and tested, and the seed


def new_run_dir(name: str, base: str | Path = "runs", *, create: bool = False) -> Path:
    """`runs/<name>-<timestamp>/`, made unique if two runs start in the same second. With `create`
    the folder is made here, atomically, so two processes starting at once never get the same one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    suffix = 1
    with writing(Path(base) / f"{name}-{stamp}"):
        while True:
            path = Path(base) / (f"{name}-{stamp}" if suffix == 1 else f"{name}-{stamp}-{suffix}")
            if not create and not path.exists():
                return path
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    path.mkdir()
                    return path
                except FileExistsError:
                    pass
            suffix += 1


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_atomic(run_dir / CONFIG, dump(config))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_atomic(run_dir / SUMMARY, json.dumps(to_plain(summary), indent=2) + "\n")


def save_weights(model: nn.Module, path: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, save(tensors))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """`model` with the weights of `path` (a run's model.safetensors); weights of another shape or
    with other layer names raise a `WeightsMismatchError` that says which and why."""
    path = Path(path)
    tensors = load_safetensors(path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError:
        config = path.parent / CONFIG
        built = f"the model {config} describes" if config.is_file() else f"this {type(model).__name__} model"
        raise WeightsMismatchError(
            f"{path} does not fit {built} ({weights_mismatch(model, tensors)}); was the config edited after "
            "training, or the weights copied from another run? Put back the config the weights were trained with"
        ) from None
    return model


def load_model(run_dir: Path, config: dict[str, Any], input_shape: Sequence[int] | None, *,
               trust_code: bool = False) -> nn.Module:
    """The architecture a run's config.yaml names, with the run's weights. A model class of the
    user's own (`module:Class`) is imported only with `trust_code` (see `zerograd.layers.require_trust`)."""
    origin = run_dir / CONFIG
    try:
        model = build_model(config["model"], input_shape=input_shape, trust_code=trust_code, origin=origin)
    except UntrustedCodeError:
        raise
    except ConfigError as error:
        raise RunDirError(f"{origin}: {error}") from None
    return load_weights(model, run_dir / WEIGHTS)  # weights that do not fit: a WeightsMismatchError saying why


def load_run(run_dir: str | Path, *, trust_code: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run directory (architecture from config.yaml, weights from
    model.safetensors) and its config. A model class of the user's own (`module:Class`) that the
    config names is code: it is imported only with `trust_code=True`."""
    path = require_run_dir(run_dir)
    config = read_config(path)
    input_shape = (read_preprocessing(path) or read_summary(path)).get("input_shape")  # sizes layer lists
    return load_model(path, config, input_shape, trust_code=trust_code).eval(), config


def require_run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist; give the folder that `zerograd train` wrote (see "
                          "runs/)")
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            hint = f"; continue it with `zerograd resume {path}`" if (path / "checkpoints").is_dir() else ""
            raise RunDirError(f"{path} is not a finished run: {name} is missing (was training interrupted?){hint}")
    return path


# Every file of a run directory is read as data that may have been damaged or written by someone
# else: whatever is wrong with it ends as one RunDirError naming the file, never a traceback.
_REWRITE = "restore the file zerograd wrote, or train the run again"

# The value types a run's JSON files hold (checked where present; other keys pass).
_NUMBER = (int, float)
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "final": (dict,), "epochs_completed": (int,), "best_epoch": (int,), "train_seconds": _NUMBER,
    "input_shape": (list, type(None)), "class_names": (list, type(None)), "task": (str, type(None)),
    "stop_reason": (str, type(None)),
    "recipe": (str,), "batch_size": (int,),
}
PREPROCESSING_TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "task": (str, type(None)), "input_shape": (list, type(None)), "class_names": (list, type(None)),
    "size": (list,), "mode": (str,), "fit": (str,), "mean": (list, *_NUMBER), "std": (list, *_NUMBER),
    "style": (str, type(None)), "columns": (list,),
}


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml: plain YAML (the safe loader: a Python tag is refused, never run), a
    mapping with the `model` and `data` sections every run's config has."""
    path = Path(run_dir) / CONFIG
    try:
        config = yaml_load(path.read_text())  # a hand-edited `lr: 1e-3` stays a number
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist; is {run_dir} a zerograd run directory?") from None
    except yaml.YAMLError as error:
        raise RunDirError(f"{yaml_problem(str(path), error)}; {_REWRITE}") from None
    except UnicodeDecodeError as error:
        raise RunDirError(f"{path} is not text ({error}); {_REWRITE}") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path} holds a {type(config).__name__}, not a mapping of config keys; {_REWRITE}")
    missing = [key for key in ("model", "data") if key not in config]
    if missing:
        raise RunDirError(f"{path} has no {' or '.join(repr(k) for k in missing)} section; {_REWRITE}")
    loss = config.setdefault("loss", FitOptions.loss)  # what training used when the config did not say
    if not isinstance(loss, str) and not (isinstance(loss, dict) and isinstance(loss.get("name"), str)):
        raise RunDirError(f'{path}: "loss" is {loss!r}, not a loss name or {{name: ..., ...}}; {_REWRITE}')
    return config


def read_summary(run_dir: Path) -> dict[str, Any]:
    return read_json_object(Path(run_dir) / SUMMARY, SUMMARY_TYPES)


def write_profile(run_dir: Path, report: ProfileReport) -> None:
    """profile.json (seconds per section) and, when steps were traced, profile/trace.json."""
    figures = report.to_dict()
    if report.trace is not None:
        with writing(run_dir / TRACE):
            (run_dir / TRACE).parent.mkdir(exist_ok=True)
        write_atomic(run_dir / TRACE, report.trace)
        figures["trace"] = TRACE
    write_atomic(run_dir / PROFILE, json.dumps(figures, indent=2) + "\n")


def write_preprocessing(run_dir: Path, preprocessing: dict[str, Any] | None) -> None:
    if preprocessing is not None:
        write_atomic(run_dir / PREPROCESSING, json.dumps(to_plain(preprocessing), indent=2) + "\n")


def write_split(run_dir: Path, split: dict[str, Any] | None) -> None:
    if split is not None:
        write_atomic(run_dir / SPLIT, json.dumps(to_plain(split), indent=1) + "\n")


def check_same_split(run_dir: Path, split: dict[str, Any] | None) -> None:
    """Before a resume: the data must split as it did when the run started. A table or folder that
    changed since (rows added, removed or reordered) would put other rows into training and test,
    so resuming would silently mix two data sets (and could train on test rows)."""
    recorded = read_json_object(Path(run_dir) / SPLIT) if split is not None else {}
    if not recorded:
        return
    current = to_plain(split)
    if all(recorded.get(key) == current.get(key) for key in ("counts", "row_parts")):
        return
    was, now = recorded.get("counts", {}), current.get("counts", {})
    parts = ("train", "val", "test")
    raise DataError(f"the data changed since {run_dir} started: {split.get('source', 'it')} now splits into "
                    f"{' / '.join(str(now.get(p, 0)) for p in parts)} train / val / test rows, against "
                    f"{' / '.join(str(was.get(p, 0)) for p in parts)} recorded in {SPLIT}"
                    + ("" if now != was else " (the same counts, other rows)")
                    + "; resuming would train and test on other rows. Put the original data back to resume, "
                    "or start a new run on the new data (zerograd train ... --out NEW_DIR)")


def read_preprocessing(run_dir: Path) -> dict[str, Any]:
    return read_json_object(Path(run_dir) / PREPROCESSING, PREPROCESSING_TYPES)


def read_json_object(path: Path, types: dict[str, tuple[type, ...]] | None = None) -> dict[str, Any]:
    """The JSON object in `path` ({} when there is no such file), the keys in `types` type-checked;
    anything else is a RunDirError naming the file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise RunDirError(f"{path} is not valid JSON ({error}); {_REWRITE}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} holds a JSON {type(data).__name__}, not an object; {_REWRITE}")
    for key, allowed in (types or {}).items():
        if key in data and (not isinstance(data[key], allowed) or isinstance(data[key], bool)):
            raise RunDirError(f'{path}: "{key}" is {json.dumps(data[key])[:60]}, not a {_type_names(allowed)}; '
                              f'{_REWRITE}')
    return data


_JSON_NAMES = {dict: "JSON object", list: "list", int: "whole number", float: "number", str: "text", type(None): "null"}


def _type_names(allowed: tuple[type, ...]) -> str:
    return " or ".join(_JSON_NAMES[t] for t in allowed if not (t is int and float in allowed))


def load_history(run_dir: str | Path) -> History:
    """The per-epoch records of a run, from its metrics.jsonl."""
    records = _read_metrics(run_dir)
    return History([r for r in records if "epoch" in r and r.get("kind", "epoch") == "epoch"])


def load_steps(run_dir: str | Path) -> list[dict[str, Any]]:
    """The every-N-steps records of a run (`"kind": "step"` lines of metrics.jsonl): step,
    fractional epoch, the train loss over the steps since the previous record, and the lr."""
    return [r for r in _read_metrics(run_dir) if r.get("kind") == "step"]


def _read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records. A last line cut short (a crash while it was written) is left out;
    any other line that is not a JSON object of numbers is an error naming the file and line."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise RunDirError(f"{path} does not exist; is {run_dir} a zerograd run directory?")
    try:
        text = path.read_text()
    except UnicodeDecodeError as error:
        raise RunDirError(f"{path} is not text ({error}); {_REWRITE}") from None
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            if number == len(lines) and not text.endswith("\n"):
                break
            raise RunDirError(f"{path}, line {number}, is not valid JSON ({error}); {_REWRITE}") from None
        if not isinstance(record, dict):
            raise RunDirError(f"{path}, line {number}, holds a JSON {type(record).__name__}, not an object; {_REWRITE}")
        bad = next((k for k, v in record.items()
                    if k != "kind" and (isinstance(v, bool) or not isinstance(v, (*_NUMBER, type(None))))), None)
        if bad is not None or not isinstance(record.get("kind", ""), str):
            key = bad if bad is not None else "kind"
            raise RunDirError(f'{path}, line {number}: "{key}" is {json.dumps(record[key])[:60]}, not a number; '
                              f'{_REWRITE}')
        records.append(record)
    return records


def export_csv(run_dir: str | Path, path: str | Path | None = None, *, kind: str = "epoch") -> Path:
    """Write a run's history as CSV (default RUN_DIR/metrics.csv; kind="step": steps.csv), one
    column per key in first-seen order; empty cells where a record lacks a key. Returns the path."""
    if kind not in ("epoch", "step"):
        raise RunDirError(f'export_csv kind must be "epoch" or "step", got "{kind}"')
    records = load_history(run_dir).records if kind == "epoch" else load_steps(run_dir)
    target = Path(path) if path else Path(run_dir) / ("metrics.csv" if kind == "epoch" else "steps.csv")
    columns = list(dict.fromkeys(k for r in records for k in r if k != "kind"))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_atomic(target, buffer.getvalue())
    return target


class MetricsWriter(RunLogger):
    """The run's own files as a logger (`callbacks.loggers.RunLogger`): each epoch's record is
    appended to metrics.jsonl as soon as the epoch ends, and every `every_steps` optimizer steps a
    `"kind": "step"` record (0: none; none either when an epoch has fewer steps); a finished run
    ends with metrics.csv (and steps.csv) written from it. The params are config.yaml already.

    With `resumed`, metrics.jsonl is first cut back to the checkpoint the run resumed from (its
    epoch records from the restored history, its step records up to the restored step), so the
    resumed run adds no duplicates.

    A record that cannot be appended (full disk, read-only folder) raises a `WriteError`; with
    `stop` (the run's `StopSignal`) it is kept in `failure` instead and training is asked to stop,
    so that the checkpoint callback saves the run first, as on Ctrl-C."""

    def __init__(self, run_dir: Path, *, every_steps: int = 0, stop: StopSignal | None = None,
                 resumed: bool = False) -> None:
        super().__init__(every_steps=every_steps)
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS
        self.stop = stop
        self.resumed = resumed
        self.failure: WriteError | None = None
        self._unwritten: list[dict[str, Any]] = []  # step records a failed write lost, kept in the checkpoint

    def start(self, run: RunInfo) -> None:
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        if self.resumed:  # what the stopped run logged after its checkpoint is logged again
            rewrite_metrics(self.path, run.history, run.global_step)
        unwritten, self._unwritten = self._unwritten, []  # restored from the checkpoint by a resume
        for record in unwritten:
            self._append(record)

    def log_metrics(self, metrics: dict[str, Any], step: int, kind: str = "epoch") -> None:
        self._append(metrics if kind == "epoch" else {"kind": kind, **metrics})

    def end(self, status: str, summary: Mapping[str, Any] | None = None) -> None:
        """metrics.csv (and steps.csv, when there are step records) of a finished run."""
        if status == FINISHED:
            export_csv(self.run_dir)
            if load_steps(self.run_dir):
                export_csv(self.run_dir, kind="step")

    def _append(self, record: dict[str, Any]) -> None:
        if self.failure is None:
            try:
                with writing(self.path), self.path.open("a") as handle:
                    handle.write(json.dumps(to_plain(record)) + "\n")
                return
            except WriteError as error:
                if self.stop is None:
                    raise
                self.failure = error
                self.stop.request(f"a failed write to {self.path.name}")
        if record.get("kind") == "step":  # epoch records are in the checkpoint's history already
            self._unwritten.append(to_plain(record))

    def state_dict(self) -> dict[str, Any]:
        """The step records a failed write kept out of metrics.jsonl: a checkpoint holds them, and
        the resumed run writes them first (resuming cuts the file back to the checkpoint)."""
        return {"unwritten": list(self._unwritten)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._unwritten = list(state.get("unwritten", []))


# ----------------------------------------------------------------------------------------------
# Resuming a run

def resume_config(run_dir: str | Path, asked: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config a run started with (its config.yaml). `asked` (a config resolved from the command
    line) may change only what does not alter the computation (device, threads, progress, ...)."""
    path = Path(run_dir)
    if not (path / CONFIG).is_file():
        raise RunDirError(f"{path} is not a run directory (no {CONFIG}); give the folder `zerograd train` wrote")
    if (path / SUMMARY).is_file() and (path / WEIGHTS).is_file():
        raise ConfigError(f"{path} is a finished run (it has {SUMMARY} and {WEIGHTS}): there is nothing to "
                          "resume; to train longer, start a new run")
    try:
        config = configs.resolve(read_config(path))
    except ConfigError as error:  # a hand-edited or foreign config: say which file
        raise RunDirError(f"{path / CONFIG}: {error}") from None
    if asked is None:
        return config
    neutral = NEUTRAL_OPTIONS | {"name", "description", "progress", "tensorboard", "checkpoint_every",
                                 "keep_checkpoints", "loggers", "mlflow"}
    changed = [k for k in dict.fromkeys([*config, *asked]) if k not in neutral and config.get(k) != asked.get(k)]
    if changed:
        shown = ", ".join(f"{k}: {config.get(k)!r} -> {asked.get(k)!r}" for k in changed[:4])
        raise ConfigError(
            f"--resume continues {path} with the config it started with, but this command changes it ({shown}); "
            f"drop the changes (`zerograd resume {path}`), or start a new run without --resume"
        )
    # `threads: null` asks for nothing: the run goes on with the count it recorded when it started
    return config | {k: asked[k] for k in neutral if k in asked and k not in ("name", "description")
                     and not (k == "threads" and asked[k] is None)}


def resume_after_restart(out: str | os.PathLike[str] | None) -> Path | None:
    """The run to continue when torchrun restarted the workers after a failure (--max-restarts):
    the `--out` directory, once the first attempt wrote its config there. None on a first start."""
    if out is None or WorkerEnv.from_environ().restart_count == 0:
        return None
    path = Path(out)
    return path if (path / CONFIG).is_file() else None


def refuse_existing_run(run_dir: str | Path) -> None:
    """A new run must not write over an earlier one's files (its metrics would mix, its
    checkpoints be pruned)."""
    path = Path(run_dir)
    metrics = path / METRICS
    logged = metrics.is_file() and metrics.stat().st_size
    if (path / SUMMARY).is_file() and (path / WEIGHTS).is_file():
        raise ConfigError(f"{path} already holds a finished training run; choose another --out so its files are not "
                          "overwritten")
    if checkpoint_dirs(path / CHECKPOINTS) or logged or (path / WEIGHTS).is_file():
        raise ConfigError(
            f"{path} already holds a training run; continue it with `zerograd resume {path}` "
            "(or --resume), or choose another --out so its files are not overwritten"
        )


def rewrite_metrics(path: Path, history: list[dict[str, Any]], global_step: int) -> None:
    """Make metrics.jsonl match a checkpoint: its epoch records from the checkpoint's history, and
    other records (e.g. every-N-steps lines) only up to the checkpoint's step, so the resumed run
    adds no duplicates. A line cut short by the crash is dropped."""
    kept = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("kind", "epoch") == "epoch":
                continue
            if isinstance(record.get("step"), (int, float)) and record["step"] > global_step:
                continue
            kept.append(record)

    def position(record: dict[str, Any]) -> tuple[float, int]:
        epoch = record.get("epoch")
        return (float(epoch) if isinstance(epoch, (int, float)) else 0.0, int(record.get("kind", "epoch") == "epoch"))

    records = sorted(kept + [to_plain(r) for r in history], key=position)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
