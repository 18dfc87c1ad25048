"""Train from a recipe or config in one call, and use a finished run again.

    run = zerograd.train("fashion-cnn", overrides={"epochs": 1})
    run.summary["final"]["test_accuracy"]
    history = zerograd.fit(model, (X, y), epochs=3)   # the loop, with progress in a notebook

In a Jupyter notebook both show a live HTML progress display and chart (reporting/notebook.py), and
a `Run` shows itself (summary, plots, epochs) as a cell's result.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from zerograd import config as configs
from zerograd import distributed, own_data, ownership, runs, signals
from zerograd.accelerator import Accelerator, resolve_device
from zerograd.cadence import Every
from zerograd.callbacks.base import Callback
from zerograd.callbacks.checkpointing import Checkpointer, ResumeFrom, settings_from
from zerograd.callbacks.loggers import FAILED
from zerograd.checkpoint_format import CHECKPOINTS, checkpoint_dirs
from zerograd.data.images import augmentation_of
from zerograd.engine import FitResult, evaluate, run_fit
from zerograd.engine import fit as loop_fit
from zerograd.errors import CheckpointError, ConfigError, TrainingInterrupted, WriteError, ZerogradWarning
from zerograd.experiment import Experiment, build_data, build_experiment, data_spec
from zerograd.losses import task_of
from zerograd.models import imported_class
from zerograd.performance import auto_threads
from zerograd.profiling import ProfileReport
from zerograd.reporting.inline import Report
from zerograd.reporting.notebook import progress_display
from zerograd.reporting.run_reporters import RunReporters, reporting_options
from zerograd.rng import seed_everything
from zerograd.runs import load_run
from zerograd.state import History
from zerograd.tta import tta_spec

__all__ = ["Run", "build_summary", "evaluate_run", "fit", "load_run", "report", "resume", "train"]


@dataclass
class Run:
    """A finished training run: where its files are, its history and summary, and the model."""

    dir: Path
    history: History
    summary: dict[str, Any]
    model: nn.Module
    config: dict[str, Any]
    profile: ProfileReport | None = None  # where the time went, with `profile: true` (also profile.json)

    @classmethod
    def open(cls, run_dir: str | Path, *, trust_code: bool = False) -> Run:
        """A finished run directory as a `Run` (the model loaded as `load_run` does), e.g. to show it in a
        notebook."""
        model, config = load_run(run_dir, trust_code=trust_code)
        path = Path(run_dir)
        return cls(path, runs.load_history(path), runs.read_summary(path), model, config)

    def _repr_html_(self) -> str:
        """A notebook shows the run: its final figures, plots and epochs (read from the run directory)."""
        from zerograd.reporting.report import run_fragment  # matplotlib: only when a run is shown

        return run_fragment(self.dir)


def report(target: Any, out: str | Path | None = None, *, replot: bool = False, trust_code: bool = False) -> Report:
    """Write the HTML report of `target` and return it (a notebook shows the page in the cell).

    `target`: a `Run` (from `train`), a `SweepResult` (from `zerograd.sweep`), or a path: a run
    directory, a sweep directory or any folder of runs. The page is written to `out` (default
    DIR/report.html); missing plots are drawn first (`replot=True` draws them all again, re-loading
    the model: a model class of the user's own only with `trust_code`)."""
    from zerograd.reporting.report import write_report  # matplotlib: only when a report is written

    directory = getattr(target, "dir", target)
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"zerograd.report takes a Run, a SweepResult or a run directory, got {type(target).__name__}")
    return Report(write_report(Path(directory), out, replot=replot, trust_code=trust_code))


def fit(model: nn.Module, train_data: Any, *, eval_data: Any = None, val_data: Any = None,
        callbacks: Sequence[Callback] = (), progress: str = "auto", **options: Any) -> History:
    """Train `model` on `train_data` and return its per-epoch `History` (the loop is `engine.fit`).

    `train_data` and `eval_data`/`val_data` may be a Dataset, a DataLoader, or an `(X, y)` pair of
    arrays or tensors. `options` are the `FitOptions` fields (lr, batch_size, epochs, loss,
    optimizer, schedule, precision, ...). `eval_data` is the held-out test set, reported as
    `test_*` every epoch; `val_data` (or `val_split`) is reported as `val_*`.

    `progress`: `auto` (the default) shows the notebook's HTML progress display and live chart in a
    Jupyter notebook and nothing elsewhere; `bar`, `plain` and `notebook` as for `train` (the rich
    bar in a terminal); `none` shows nothing."""
    display = None if progress == "none" else progress_display(progress)
    hooks = [*callbacks, display] if display is not None else list(callbacks)
    try:
        return loop_fit(model, train_data, eval_data=eval_data, val_data=val_data, callbacks=hooks, **options)
    finally:
        if display is not None:
            display.close()  # type: ignore[attr-defined]  # a live bar comes down even when training fails


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

    `progress` (bar, plain, none or notebook) overrides the config's `progress:`; `quiet` prints
    nothing. In a Jupyter notebook `bar` (the default) is the notebook's HTML display and live chart.
    `resume=RUN_DIR` continues that run in place from its newest intact checkpoint (the config
    must be the one it started with); SIGINT/SIGTERM save a checkpoint and raise
    `TrainingInterrupted`.

    `source` is the caller's own config, so a model class it names (`module:Class`) is imported;
    `trust_code=False` refuses that (as `resume` does for a run directory's config)."""
    config, notes = own_data.resolve_config(source, overrides, trust_code=trust_code)  # own data: its defaults
    if not quiet and distributed.is_main():
        for note in notes:
            print(note)
    if resume is not None:
        config = runs.resume_config(resume, config)
    every, keep = settings_from(config)
    seed_everything(config["seed"])  # the model's initial weights come from the seed too
    origin = Path(resume) / runs.CONFIG if resume is not None else (source if isinstance(source, (str, Path)) else None)
    experiment = build_experiment(config, trust_code=trust_code, origin=origin)
    if not notes and not quiet and distributed.is_main():  # own data in a config that says everything: its notes
        for note in (experiment.data.info or {}).get("notes", []):
            print(note)
    # a device this machine lacks, or a reporting key or logger that cannot be used, fails before any run file
    reporting_options(config, progress)
    device = Accelerator.create(config["device"], config["precision"]).device
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
        runs.refuse_existing_run(run_dir)  # never write over an earlier run's files
    else:
        runs.check_same_split(run_dir, experiment.data.split)  # (every rank: read only, so all stop together)
    if distributed.is_main():  # one writer: rank 0 owns the run directory
        try:
            if not resumed:
                runs.write_config(run_dir, config)
            runs.write_preprocessing(run_dir, experiment.data.preprocessing)
            runs.write_split(run_dir, experiment.data.split)
        except WriteError as error:
            safe = (f"its checkpoints are untouched. Free some disk space (or make the folder writable), {go_on}"
                    if resumed else "nothing was trained yet. Free some disk space (or choose a writable --out), "
                    "then run the command again")
            raise WriteError(f"{error}; {safe}") from None
    stop = signals.StopSignal()
    reporters = RunReporters(config, run_dir, experiment, quiet=quiet, progress=progress)
    # a failed write stops the run, saved; a resumed run cuts metrics.jsonl back to its checkpoint
    metrics = runs.MetricsWriter(run_dir, every_steps=reporters.log_every, stop=stop, resumed=resumed)
    metrics.ends_with_fit = False  # its CSV copies come with the final files (`reporters.finish`), failing softly
    saver = Checkpointer(run_dir / CHECKPOINTS, every=every, keep=keep, stop=stop)  # runs last (its `order`)
    hooks: list[Callback] = [*reporters.callbacks, metrics, *callbacks, saver]
    if resumed:  # runs first (its `order`): the others start from the restored state
        hooks.append(ResumeFrom(run_dir / CHECKPOINTS))
    try:
        with reporters, signals.graceful_stop(stop):  # takes a live progress bar down even when training fails
            result = run_fit(experiment.model, experiment.data.train, eval_data=experiment.data.test,
                             val_data=experiment.data.val, callbacks=hooks, **configs.fit_options(config))
    except WriteError as error:  # a file other than a checkpoint; the checkpoints are as they were
        raise WriteError(f"{error}; {_newest_checkpoint_text(run_dir)}. Free some disk space (or make the folder "
                         f"writable), {go_on}") from None
    except CheckpointError as error:
        if metrics.failure is None:
            raise
        raise CheckpointError(f"{metrics.failure}; {error}") from None  # the stop to save the run could not save it
    if metrics.failure is not None:
        where = f"epoch {result.epoch + 1}" if result.batch else f"the end of epoch {result.epoch}"
        raise WriteError(f"{metrics.failure}; training stopped at step {result.global_step} ({where}) and saved "
                         f"checkpoint {saver.saved}. Free some disk space (or make the folder writable), {go_on}")
    if result.stop_reason == "interrupted":
        raise TrainingInterrupted(
            f"training stopped by {stop.name or 'a stop signal (to another rank)'} at epoch {result.epoch + 1}, "
            f"after {result.global_step} steps; checkpoint saved in {saver.saved}. Continue with: zerograd resume "
            f"{run_dir}{_trust_flag(config)}{distributed.relaunch_flags()}",
            exit_code=stop.exit_code)
    summary = build_summary(experiment, result)
    if task_of(config["loss"]) == "classification" and (experiment.data.test is not None
                                                        or experiment.data.val is not None):
        # the plots of a classifier read only its evaluation split: the training set (MNIST's 47 MB) is let go
        # first, so drawing them does not raise the run's peak memory
        experiment.data.train = None
    if result.accelerator.is_main:
        try:
            _write_final_files(run_dir, result, summary, reporters, every, go_on)
        finally:  # the trackers end as failed when the final files could not be written (else a no-op)
            reporters.end_loggers(FAILED)
    return Run(run_dir, result.history, summary, result.model, config, result.profile)


def _trust_flag(config: dict[str, Any]) -> str:
    """` --trust-code` when the run's model is a class of the user's own: resuming imports it again."""
    return " --trust-code" if imported_class(config["model"]) else ""


def _write_final_files(run_dir: Path, result: FitResult, summary: dict[str, Any], reporters: RunReporters,
                       every: Every, go_on: str) -> None:
    """The weights first (the one file that cannot be made again without training), then the summary;
    then metrics.csv and the plots, whose failure only warns: they are drawn again from the run."""
    try:
        runs.save_weights(result.model, run_dir / runs.WEIGHTS)
    except WriteError as error:
        newest = _newest_checkpoint(run_dir)
        if newest is None:
            safe = (f"no checkpoint holds the trained weights (checkpoints: {every}), so the training must be done "
                    f"again: free some disk space (or make the folder writable), {go_on} (it starts over)")
        elif _checkpoint_step(newest) == result.global_step:
            safe = (f"the trained weights are in checkpoint {newest}. Free some disk space (or make the folder "
                    f"writable), {go_on} to write the run's files from it")
        else:
            safe = (f"the newest checkpoint, {newest}, is from step {_checkpoint_step(newest)} of "
                    f"{result.global_step}. "
                    f"Free some disk space (or make the folder writable), {go_on} to train the rest again from it")
        raise WriteError(f"{error}; {safe}") from None
    try:
        runs.write_summary(run_dir, summary)
    except WriteError as error:
        raise WriteError(f"{error}; the trained weights are safe in {run_dir / runs.WEIGHTS}. Free some disk space "
                         f"(or make the folder writable), {go_on} to finish the run's files") from None
    if result.profile is not None:
        try:
            runs.write_profile(run_dir, result.profile)
        except WriteError as error:  # the figures are printed too; the run itself is complete
            warnings.warn(f"{error}; the profile was not saved (the run's other files are)", ZerogradWarning,
                          stacklevel=2)
    reporters.finish(result.model, device=str(result.accelerator.device), summary=summary)  # metrics.csv, plots/


def _newest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoint_dirs(run_dir / CHECKPOINTS)
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
    return train(runs.resume_config(run_dir), resume=run_dir, quiet=quiet, callbacks=callbacks, progress=progress,
                 trust_code=trust_code)


def build_summary(experiment: Experiment, result: FitResult) -> dict[str, Any]:
    """summary.json: how the run ended, its final figures, and what it ran on."""
    config, data, history = experiment.config, experiment.data, result.history
    record = history.last
    if result.restored_epoch is not None:  # early stopping put this epoch's weights back: report its figures
        record = next((r for r in history.records if r.get("epoch") == result.restored_epoch), record)
    final = {k: v for k, v in record.items() if k not in ("epoch", "lr", "seconds")}
    acc, opts = result.accelerator, result.options
    summary: dict[str, Any] = {
        "recipe": config["name"],
        "task": experiment.task,
        "epochs_completed": len(history),
        "train_seconds": round(result.train_seconds, 3),
        "final": final,
        "best_epoch": result.best_epoch if result.best_epoch is not None else len(history),
        "stop_reason": result.stop_reason,
        "precision": acc.precision,
        "device": str(acc.device),
        "world_size": acc.world_size,
        "threads": opts.threads,  # intra-op CPU threads (what `threads: null` chose, or as set)
        "batch_size": opts.batch_size,  # the global batch, the same for any process count
        "per_rank_batch_size": opts.batch_size // acc.world_size,
        "input_shape": data.input_shape,
        "class_names": data.class_names,
    }
    if result.init is not None:  # `init`: where the weights came from, what was loaded, skipped and new
        summary["init"] = result.init
    if result.averaged is not None:  # ema / swa: the saved weights and the final figures are the averaged ones
        summary["weights"] = result.averaged
    if data.summary_extras is not None:  # figures of the data set's own (the line's learned w and b)
        extras = data.summary_extras(result.model)
        summary |= extras
        final |= extras
    return summary


def evaluate_run(run_dir: str | Path, *, device: str = "auto", trust_code: bool = False,
                 tta: bool | dict | None = None) -> dict[str, float]:
    """Loss and metrics of a finished run recomputed from its saved weights, on the test set
    (`test_*`), or on the training set (`train_*`) for data sets without one. `tta` (None: as the
    run's config says) averages over views of each image (see `zerograd.tta`)."""
    model, config = load_run(run_dir, trust_code=trust_code)
    data = build_data(data_spec(config))
    prefix, eval_data = ("test_", data.test) if data.test is not None else ("train_", data.train)
    precision = config.get("precision", "fp32")  # as the run evaluated itself, so the figures are its own
    if precision == "fp16" and resolve_device(device).type != "cuda":
        precision = "fp32"  # a GPU run looked at on a CPU: fp16 autocast needs CUDA
    results = evaluate(model, eval_data, loss=config["loss"], metrics=config.get("metrics"),
                       batch_size=config.get("eval_batch_size", 1000), device=device, precision=precision,
                       tta=tta_spec(tta, config.get("tta")), augmentation=augmentation_of(data.train))
    return {prefix + key: value for key, value in results.items()}
