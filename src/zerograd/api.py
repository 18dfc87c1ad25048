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

from zerograd import checkpoint, distributed, ownership, runs, signals
from zerograd import config as configs
from zerograd.accelerator import Accelerator
from zerograd.cadence import Every
from zerograd.callbacks import Callback
from zerograd.engine import History, LoopState, evaluate, fit
from zerograd.errors import (
    CheckpointError,
    ConfigError,
    TrainingInterrupted,
    WriteError,
)
from zerograd.experiment import Experiment, build_data, build_experiment, data_spec
from zerograd.models import imported_class
from zerograd.performance import auto_threads
from zerograd.reporting.hooks import RunReporters
from zerograd.rng import seed_everything


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
    else:  # rank 0 names (and makes) the folder, so two runs started in the same second get two
        run_dir = Path(out) if out else distributed.broadcast_from_main(
            runs.new_run_dir(config["name"], create=True) if distributed.is_main() else None)
    # One process at a time: a second train/resume of this folder is refused before it writes anything.
    with ownership.hold(run_dir, "resume" if resume is not None else "train"):
        return _train_in(run_dir, config, experiment, every, keep, resumed=resume is not None, quiet=quiet,
                         callbacks=callbacks, progress=progress)


def _train_in(run_dir: Path, config: dict[str, Any], experiment: Experiment, every: Every, keep: int, *,
              resumed: bool, quiet: bool, callbacks: Sequence[Callback], progress: str | None) -> Run:
    """`train` once it owns `run_dir`: the run's first files, `fit`, the final files."""
    go_on = f"then continue with `zerograd resume {run_dir}`{distributed.relaunch_flags()}"
    if not resumed:
        checkpoint.refuse_existing_run(run_dir)  # never write over an earlier run's files
    if distributed.is_main():  # one writer: rank 0 owns the run directory
        try:
            if not resumed:
                runs.write_config(run_dir, config)
            runs.write_preprocessing(run_dir, experiment.data.preprocessing)
        except WriteError as error:
            safe = (f"its checkpoints are untouched. Free some disk space (or make the folder writable), {go_on}" if resumed
                    else "nothing was trained yet. Free some disk space (or choose a writable --out), then run the command again")
            raise WriteError(f"{error}; {safe}") from None
    final = _FinalState()
    stop = signals.StopSignal()
    reporters = RunReporters(config, run_dir, experiment, quiet=quiet, progress=progress)
    metrics = runs.MetricsWriter(run_dir, every_steps=reporters.log_every, stop=stop)  # a failed write stops, saved
    hooks: list[Callback] = [*reporters.callbacks, metrics, *callbacks, final]
    saver = checkpoint.Checkpointer(run_dir / checkpoint.CHECKPOINTS, every=every, keep=keep, stop=stop)
    hooks.insert(len(hooks) - 1, saver)  # last before `final`: it saves what the other callbacks did this epoch
    if resumed:  # first: the others start from the restored state
        hooks.insert(0, checkpoint.ResumeFrom(run_dir / checkpoint.CHECKPOINTS, metrics_path=run_dir / runs.METRICS))
    try:
        with reporters, signals.graceful_stop(stop):  # takes a live progress bar down even when training fails
            history = fit(
                experiment.model,
                experiment.data.train,
                eval_data=experiment.data.test,
                val_data=experiment.data.val,
                callbacks=hooks,
                **configs.fit_options(config),
            )
    except WriteError as error:  # a file other than a checkpoint; the checkpoints are as they were
        raise WriteError(f"{error}; {_newest_checkpoint_text(run_dir)}. Free some disk space (or make the folder "
                         f"writable), {go_on}") from None
    except CheckpointError as error:
        if metrics.failure is None:
            raise
        raise CheckpointError(f"{metrics.failure}; {error}") from None  # the stop to save the run could not save it
    assert final.state is not None
    if metrics.failure is not None:
        where = f"epoch {final.state.epoch + 1}" if final.state.batch else f"the end of epoch {final.state.epoch}"
        raise WriteError(f"{metrics.failure}; training stopped at step {final.state.global_step} ({where}) and saved "
                         f"checkpoint {saver.saved}. Free some disk space (or make the folder writable), {go_on}")
    if final.state.stop_reason == "interrupted":
        raise TrainingInterrupted(
            f"training stopped by {stop.name or 'a stop signal (to another rank)'} at epoch {final.state.epoch + 1}, after {final.state.global_step} steps; "
            f"checkpoint saved in {saver.saved}. Continue with: zerograd resume {run_dir}{_trust_flag(config)}{distributed.relaunch_flags()}",
            exit_code=stop.exit_code)
    summary = build_summary(experiment, history, final.state)
    if final.state.accelerator.is_main:
        _write_final_files(run_dir, final.state, summary, reporters, every, go_on)
    return Run(run_dir, history, summary, final.state.raw_model, config)


def _trust_flag(config: dict[str, Any]) -> str:
    """` --trust-code` when the run's model is a class of the user's own: resuming imports it again."""
    return " --trust-code" if imported_class(config["model"]) else ""
def _write_final_files(run_dir: Path, state: LoopState, summary: dict[str, Any], reporters: RunReporters,
                       every: Every, go_on: str) -> None:
    """The weights first (the one file that cannot be made again without training), then the summary;
    then metrics.csv and the plots, whose failure only warns: they are drawn again from the run."""
    try:
        runs.save_weights(state.raw_model, run_dir / runs.WEIGHTS)
    except WriteError as error:
        newest = _newest_checkpoint(run_dir)
        if newest is None:
            safe = (f"no checkpoint holds the trained weights (checkpoints: {every}), so the training must be done "
                    f"again: free some disk space (or make the folder writable), {go_on} (it starts over)")
        elif _checkpoint_step(newest) == state.global_step:
            safe = f"the trained weights are in checkpoint {newest}. Free some disk space (or make the folder writable), {go_on} to write the run's files from it"
        else:
            safe = (f"the newest checkpoint, {newest}, is from step {_checkpoint_step(newest)} of {state.global_step}. "
                    f"Free some disk space (or make the folder writable), {go_on} to train the rest again from it")
        raise WriteError(f"{error}; {safe}") from None
    try:
        runs.write_summary(run_dir, summary)
    except WriteError as error:
        raise WriteError(f"{error}; the trained weights are safe in {run_dir / runs.WEIGHTS}. Free some disk space "
                         f"(or make the folder writable), {go_on} to finish the run's files") from None
    reporters.finish(state.raw_model, device=str(state.accelerator.device))  # metrics.csv, plots/


def _newest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoint.checkpoint_dirs(run_dir / checkpoint.CHECKPOINTS)
    return found[0] if found else None


def _checkpoint_step(path: Path) -> int:
    return int(path.name.removeprefix("step-"))


def _newest_checkpoint_text(run_dir: Path) -> str:
    newest = _newest_checkpoint(run_dir)
    if newest is None:
        return "no checkpoint was written yet, so resuming starts over"
    return f"the newest checkpoint, {newest.name}, is intact"


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
