"""Train from a recipe or config in one call, and use a finished run again.

    run = zerograd.train("fashion-cnn", overrides={"epochs": 1})
    run.summary["final"]["test_accuracy"]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from zerograd import checkpoint, distributed, runs, signals
from zerograd import config as configs
from zerograd.accelerator import Accelerator
from zerograd.callbacks import Callback
from zerograd.engine import History, LoopState, evaluate, fit, seed_everything
from zerograd.errors import ConfigError, TrainingInterrupted
from zerograd.experiment import Experiment, build_data, build_experiment, data_spec
from zerograd.models import imported_class
from zerograd.performance import auto_threads
from zerograd.reporting.hooks import RunReporters


@dataclass
class Run:
    """A finished training run: where its files are, its history and summary, and the model."""

    dir: Path
    history: History
    summary: dict[str, Any]
    model: nn.Module
    config: dict[str, Any]


class _FinalState(Callback):
    """Keeps the loop state so the summary can say how training ended."""

    state: LoopState | None = None

    def on_fit_end(self, state: LoopState) -> None:
        self.state = state


@distributed.in_process_group  # under torchrun: join the job (no-op when the CLI already did)
def train(
    source: str | Path | dict[str, Any],
    *,
    overrides: dict[str, Any] | None = None,
    out: str | Path | None = None,
    quiet: bool = False,
    callbacks: Sequence[Callback] = (),
    progress: str | None = None,
    resume: str | Path | None = None,
    trust_code: bool = True,
) -> Run:
    """Train a recipe name, a YAML file or a config mapping, writing a run directory.

    `progress` (bar, plain or none) overrides the config's `progress:`; `quiet` prints nothing.
    `resume=RUN_DIR` continues that run in place from its newest intact checkpoint (the config
    must be the one it started with); SIGINT/SIGTERM save a checkpoint and raise
    `TrainingInterrupted`.

    `source` is the caller's own config, so a model class it names (`module:Class`) is imported;
    `trust_code=False` refuses that (as `resume` does for a run directory's config)."""
    config = configs.resolve(source, overrides)
    if resume is not None:
        config = checkpoint.resume_config(resume, config)
    every, keep = checkpoint.settings_from(config)
    seed_everything(config["seed"])  # the model's initial weights come from the seed too
    origin = Path(resume) / runs.CONFIG if resume is not None else (source if isinstance(source, (str, Path)) else None)
    experiment = build_experiment(config, trust_code=trust_code, origin=origin)
    device = Accelerator.create(config["device"], config["precision"]).device  # a device this machine lacks fails before any run file is written
    if config["threads"] is None and device.type == "cpu":  # config.yaml says the count, so it trains the same again
        config["threads"] = auto_threads(experiment.model, experiment.data.sample_input(), device,
                                         config["batch_size"] // distributed.world_size())
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise ConfigError(f"--resume continues {resume} in place; leave out --out (it says {out})")
        run_dir = Path(resume)
    else:
        run_dir = Path(out) if out else distributed.broadcast_from_main(runs.new_run_dir(config["name"]))
        checkpoint.refuse_existing_run(run_dir)  # never write over an earlier run's files
    if distributed.is_main():  # one writer: rank 0 owns the run directory
        if resume is None:
            runs.write_config(run_dir, config)
        runs.write_preprocessing(run_dir, experiment.data.preprocessing)
    final = _FinalState()
    reporters = RunReporters(config, run_dir, experiment, quiet=quiet, progress=progress)
    hooks: list[Callback] = [*reporters.callbacks, runs.MetricsWriter(run_dir, every_steps=reporters.log_every),
                             *callbacks, final]
    stop = signals.StopSignal()
    saver = checkpoint.Checkpointer(run_dir / checkpoint.CHECKPOINTS, every=every, keep=keep, stop=stop)
    hooks.insert(len(hooks) - 1, saver)  # last before `final`: it saves what the other callbacks did this epoch
    if resume is not None:  # first: the others start from the restored state
        hooks.insert(0, checkpoint.ResumeFrom(run_dir / checkpoint.CHECKPOINTS, metrics_path=run_dir / runs.METRICS))
    with reporters, signals.graceful_stop(stop):  # takes a live progress bar down even when training fails
        history = fit(
            experiment.model,
            experiment.data.train,
            eval_data=experiment.data.test,
            val_data=experiment.data.val,
            callbacks=hooks,
            **configs.fit_options(config),
        )
    assert final.state is not None
    if final.state.stop_reason == "interrupted":
        raise TrainingInterrupted(
            f"training stopped by {stop.name or 'a stop signal (to another rank)'} at epoch {final.state.epoch + 1}, after {final.state.global_step} steps; "
            f"checkpoint saved in {saver.saved}. Continue with: zerograd resume {run_dir}{_trust_flag(config)}{distributed.relaunch_flags()}",
            exit_code=stop.exit_code)
    summary = build_summary(experiment, history, final.state)
    if final.state.accelerator.is_main:
        runs.save_weights(final.state.raw_model, run_dir / runs.WEIGHTS)
        runs.write_summary(run_dir, summary)
        reporters.finish(final.state.raw_model, device=str(final.state.accelerator.device))  # metrics.csv, plots/
    return Run(run_dir, history, summary, final.state.raw_model, config)


def _trust_flag(config: dict[str, Any]) -> str:
    """` --trust-code` when the run's model is a class of the user's own: resuming imports it again."""
    return " --trust-code" if imported_class(config["model"]) else ""


def resume(run_dir: str | Path, *, quiet: bool = False, callbacks: Sequence[Callback] = (),
           progress: str | None = None, trust_code: bool = False) -> Run:
    """Continue an interrupted run in place from its newest intact checkpoint, with the config it
    started with; it ends with the same files (and, on CPU, the same weights) as an uninterrupted run.
    A model class of the user's own that the run's config names is imported only with `trust_code`."""
    return train(checkpoint.resume_config(run_dir), resume=run_dir, quiet=quiet, callbacks=callbacks, progress=progress,
                 trust_code=trust_code)


def build_summary(experiment: Experiment, history: History, state: LoopState) -> dict[str, Any]:
    config, data = experiment.config, experiment.data
    record = history.last
    if state.restored_epoch is not None:  # early stopping put this epoch's weights back: report its figures
        record = next((r for r in history.records if r.get("epoch") == state.restored_epoch), record)
    final = {k: v for k, v in record.items() if k not in ("epoch", "lr", "seconds")}
    summary: dict[str, Any] = {
        "recipe": config["name"],
        "task": experiment.task,
        "epochs_completed": len(history),
        "train_seconds": round(state.train_seconds, 3),
        "final": final,
        "best_epoch": state.best_epoch if state.best_epoch is not None else len(history),
        "stop_reason": state.stop_reason,
        "precision": state.accelerator.precision,
        "device": str(state.accelerator.device),
        "world_size": state.accelerator.world_size,
        "threads": state.options.threads,  # intra-op CPU threads (what `threads: null` chose, or as set)
        "batch_size": state.options.batch_size,  # the global batch, the same for any process count
        "per_rank_batch_size": state.options.batch_size // state.accelerator.world_size,
        "input_shape": data.input_shape,
        "class_names": data.class_names,
    }
    model = state.raw_model
    if isinstance(model, nn.Linear) and model.weight.numel() == 1:
        summary["weight"] = final["weight"] = float(model.weight.detach().reshape(()))
        summary["bias"] = final["bias"] = float(model.bias.detach().reshape(()))
    return summary


def load_run(run_dir: str | Path, *, trust_code: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model of a run directory (architecture from config.yaml, weights from
    model.safetensors) and its config. A model class of the user's own (`module:Class`) that the
    config names is code: it is imported only with `trust_code=True`."""
    path = runs.require_run_dir(run_dir)
    config = runs.read_config(path)
    input_shape = (runs.read_preprocessing(path) or runs.read_summary(path)).get("input_shape")  # sizes layer lists
    return runs.load_model(path, config, input_shape, trust_code=trust_code).eval(), config


def evaluate_run(run_dir: str | Path, *, device: str = "auto", trust_code: bool = False) -> dict[str, float]:
    """Loss and metrics of a finished run recomputed from its saved weights, on the test set
    (`test_*`), or on the training set (`train_*`) for data sets without one."""
    model, config = load_run(run_dir, trust_code=trust_code)
    data = build_data(data_spec(config))
    prefix, eval_data = ("test_", data.test) if data.test is not None else ("train_", data.train)
    results = evaluate(model, eval_data, loss=config["loss"], metrics=config.get("metrics"),
                       batch_size=config.get("eval_batch_size", 1000), device=device)
    return {prefix + key: value for key, value in results.items()}
