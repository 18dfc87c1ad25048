"""The `zerograd` command: a thin shell over the library API.

Every mistake a user can make ends as one line on stderr and exit code 2; a training run that is
interrupted exits 130. The parser is built from torch-free modules and each `cmd_*` imports what it
uses, so `--help`, `recipes` and a mistyped flag answer without torch (tests/test_cli_startup.py).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zerograd import sources
from zerograd.cli_flags import (
    OWN_DATA_FLAGS,
    add_launch_arguments,
    add_own_data_arguments,
    add_sweep_arguments,
    add_training_arguments,
    add_trust_argument,
    add_tta_argument,
    parse_arguments,
)
from zerograd.errors import ConfigError, DataError, TrainingInterrupted, ZerogradError, one_line_warnings

if TYPE_CHECKING:
    from zerograd.launch import LaunchOptions
    from zerograd.predictor import Prediction

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command whose reader closed the pipe


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parse_arguments(parser, given)
    args.argv = given  # what `--nproc` re-runs in each worker
    args.owns_process = argv is None  # run as the `zerograd` command itself, not called from Python code
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        with warnings.catch_warnings():  # zerograd's own warnings as one line each, like its errors
            warnings.showwarning = one_line_warnings(warnings.showwarning)
            code = int(args.handler(args) or 0)
            sys.stdout.flush()  # a reader that went away is noticed here, not in the interpreter's exit
            return code
    except BrokenPipeError:  # `zerograd recipes | head -1`: the reader has all it wanted; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the exit's own flush would fail again)
        return EXIT_BROKEN_PIPE
    except TrainingInterrupted as error:  # a checkpoint was saved: say how to go on, exit 128 + signal
        from zerograd import distributed  # (torch: loaded by then, as every command that raises this trains)

        if distributed.is_main():  # every rank stops at the same step; one says so
            print(f"zerograd: {error}", file=sys.stderr)
        distributed.record_error(error)
        return error.exit_code
    except ZerogradError as error:
        from zerograd import distributed

        print(f"zerograd: error: {distributed.rank_prefix()}{error}", file=sys.stderr)
        distributed.record_error(error)  # under torchrun: the launcher shows this rank's message
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("zerograd: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        from zerograd import distributed

        if distributed.is_peer_failure(error):  # another rank died first; its error is the one to read
            print(f"zerograd: error: {distributed.rank_prefix()}a collective operation failed; another worker "
                  f"crashed or stopped responding ({str(error).splitlines()[0][:300]})", file=sys.stderr)
            distributed.record_error(error)
            return 1
        distributed.record_error(error)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zerograd", description="Train PyTorch networks with one command.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    recipes = commands.add_parser("recipes", help="list the built-in recipes")
    recipes.set_defaults(handler=cmd_recipes)

    train = commands.add_parser("train", help="train a recipe, a YAML config or your own data (--data) and write a run "
                                              "directory")
    train.add_argument("recipe", metavar="RECIPE|FILE.yaml", nargs="?",
                       help="a recipe name (see `zerograd recipes`) or a config file")
    add_own_data_arguments(train)
    add_training_arguments(train)
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue this interrupted run in place from its newest checkpoint (same config)")
    add_trust_argument(train, "with --resume RUN_DIR alone: ")
    add_launch_arguments(train)
    train.set_defaults(handler=cmd_train)

    resume = commands.add_parser("resume", help="continue an interrupted run from its newest checkpoint, exactly")
    resume.add_argument("run_dir", metavar="RUN_DIR")
    resume.add_argument("--quiet", action="store_true", help="print only the summary")
    resume.add_argument("--progress", choices=("bar", "plain", "none"), help="as for train")
    add_trust_argument(resume)
    add_launch_arguments(resume)  # a DDP run resumes with as many processes as it had
    resume.set_defaults(handler=cmd_resume)

    evaluate = commands.add_parser("evaluate", help="re-load a run's weights and print its test loss and metrics")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--device", default="auto")
    add_tta_argument(evaluate)
    add_trust_argument(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser("predict", help="predict with a trained run: images (PNG/JPEG), .npy arrays or .csv "
                                                  "rows")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("files", metavar="FILE", nargs="+")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    predict.add_argument("--json", action="store_true", help="print one JSON object per input")
    add_tta_argument(predict)
    add_trust_argument(predict)
    predict.set_defaults(handler=cmd_predict)

    serve = commands.add_parser("serve", help="a local web page to draw a digit (or drop an image) and see the "
                                              "predictions, "
                                               "and a JSON API for any run (POST /predict, /openapi.json)")
    serve.add_argument("run_dir", metavar="RUN_DIR")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                           "only)")
    serve.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    serve.add_argument("--quiet", action="store_true", help="do not log requests (errors still are)")
    add_trust_argument(serve)
    serve.set_defaults(handler=cmd_serve)

    export = commands.add_parser("export", help="export a run's model to ONNX or torch.export (.pt2), checked against "
                                                "PyTorch")
    export.add_argument("run_dir", metavar="RUN_DIR")
    export.add_argument("--format", default="onnx",
                        help="onnx (default), export (a torch.export program, .pt2) or torchscript (legacy: "
                             "deprecated in PyTorch)")
    export.add_argument("--out", help="the file to write (default RUN_DIR/model.onnx, model.pt2 or model.pt)")
    add_trust_argument(export)
    export.set_defaults(handler=cmd_export)

    plot = commands.add_parser("plot", help="draw a run's plots (curves, confusion matrix, predictions...) into "
                                            "RUN_DIR/plots/")
    plot.add_argument("run_dir", metavar="RUN_DIR")
    plot.add_argument("--out", help="folder for the PNG files (default RUN_DIR/plots)")
    plot.add_argument("--device", default="auto", help="where to compute predictions (default auto)")
    add_trust_argument(plot)
    plot.set_defaults(handler=cmd_plot)

    report = commands.add_parser("report", help="write a self-contained report.html for a run (or a folder of runs)")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", help="the HTML file (default RUN_DIR/report.html)")
    report.add_argument("--replot", action="store_true", help="draw the plots again even if RUN_DIR/plots/ has them")
    add_trust_argument(report, "when plots are drawn: ")
    report.set_defaults(handler=cmd_report)

    compare = commands.add_parser("compare", help="compare runs: config differences and final metrics, best first, and "
                                                  "their curves")
    compare.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories, or folders that hold runs")
    compare.add_argument("--out", help="the overlay plot (default compare.png beside the first run)")
    compare.add_argument("--metric", help="rank by this final metric (default: val/test accuracy, or loss for "
                                          "regression)")
    compare.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    compare.set_defaults(handler=cmd_compare)

    sweep = commands.add_parser("sweep", help="train a grid (or a random/Optuna sample) of configurations and rank "
                                              "them")
    sweep.add_argument("recipe", metavar="RECIPE|FILE.yaml", help="the config every run starts from")
    add_training_arguments(sweep)
    add_sweep_arguments(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    cv = commands.add_parser("cv", help="k-fold cross-validation: one run per fold, every metric's mean ± std")
    cv.add_argument("recipe", metavar="RECIPE|FILE.yaml", nargs="?", help="the config every fold trains (or --data)")
    add_own_data_arguments(cv)
    add_training_arguments(cv)
    cv.add_argument("--folds", type=int, default=5, help="number of folds of the training set (default 5)")
    cv.add_argument("--jobs", type=int, default=1, help="folds trained at once, in separate processes (default 1)")
    cv.add_argument("--metric", help="the metric to report first (default: accuracy for classification, else loss; "
                                     "of the validation fold)")
    cv.add_argument("--cv-seed", type=int, default=0, help="seed of the split into folds (default 0)")
    cv.set_defaults(handler=cmd_cv)

    lr_find = commands.add_parser("lr-find", help="sweep the learning rate up exponentially, plot loss vs lr and "
                                                  "suggest one")
    lr_find.add_argument("recipe", metavar="RECIPE|FILE.yaml", help="a recipe name or a config file")
    lr_find.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                         help="set any config key, as for train (e.g. --set batch_size=128)")
    lr_find.add_argument("--out", help="folder for lr_find.png and lr_find.json (default "
                                       "runs/<recipe>-lr-find-<timestamp>)")
    lr_find.add_argument("--start-lr", type=float, default=1e-7, help="first lr of the sweep (default 1e-7)")
    lr_find.add_argument("--end-lr", type=float, default=10.0, help="last lr of the sweep (default 10)")
    lr_find.add_argument("--steps", type=int, default=100, help="training steps in the sweep (default 100)")
    lr_find.set_defaults(handler=cmd_lr_find)
    parser.commands = commands.choices  # type: ignore[attr-defined]  # (parse_arguments' did-you-mean)
    return parser


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from zerograd import config as configs

    overrides = dict(configs.parse_assignment(text) for text in args.assignments)
    for key in ("epochs", "lr", "batch_size", "seed", "device", "progress", "tensorboard", "profile"):
        value = getattr(args, key, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "loggers", None):
        named = [name.strip() for text in args.loggers for name in text.split(",") if name.strip()]
        overrides["loggers"] = list(dict.fromkeys(named))
    return overrides


def cmd_recipes(args: argparse.Namespace) -> int:
    for name in sources.recipe_names():
        description = sources.load_source(name).get("description", "")
        print(f"{name:20s} {description}")
    return 0


@contextlib.contextmanager
def long_lived_imports(args: argparse.Namespace) -> Iterator[None]:
    """Around a training command's imports, when the command is the whole process: no garbage
    collection while torch and zerograd load, then everything loaded is frozen (`gc.freeze`).

    The ~180,000 objects of torch, numpy and zerograd live until the process exits, yet every full
    collection walks them all: four during a fashion-mlp run (0.33 s CPU at load 6, one of them while
    matplotlib loads for the plots) and the one the interpreter runs as it shuts down, which made
    most of the ~1.2 s between the command's last line and its exit. Frozen, they are walked by none.
    Frozen garbage is never freed, which costs nothing here: the process ends with the command.
    Called from Python (`main([...])`, the tests), the interpreter is left as it was."""
    if not getattr(args, "owns_process", False):
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.freeze()


def cmd_train(args: argparse.Namespace) -> int:
    with long_lived_imports(args):
        from zerograd import api, distributed, launch, runs
        from zerograd.reporting.profile_table import print_profile

    job = launch.launch_options(args)
    if job is not None:
        return launch_workers(job, args)
    if args.resume is not None and args.recipe is None and args.data is None:
        return cmd_resume(argparse.Namespace(run_dir=args.resume, quiet=args.quiet, progress=args.progress,
                                             dist_timeout=args.dist_timeout, trust_code=args.trust_code))
    args.recipe = train_source(args)
    with distributed.process_group(timeout_s=args.dist_timeout):  # a no-op unless run by torchrun
        run = api.train(args.recipe, overrides=training_overrides(args), out=args.out, quiet=args.quiet,
                        resume=args.resume or runs.resume_after_restart(args.out))
        if distributed.is_main():
            print_summary(run.summary, run.dir)
            print_profile(run.profile, run.dir)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    with long_lived_imports(args):
        from zerograd import api, distributed, launch
        from zerograd.reporting.profile_table import print_profile

    job = launch.launch_options(args) if hasattr(args, "nproc") else None
    if job is not None:
        return launch_workers(job, args)
    with distributed.process_group(timeout_s=args.dist_timeout):  # a no-op unless run by torchrun
        run = api.resume(args.run_dir, quiet=args.quiet, progress=args.progress, trust_code=args.trust_code)
        if distributed.is_main():
            print_summary(run.summary, run.dir)
            print_profile(run.profile, run.dir)
    return 0


def launch_workers(job: LaunchOptions, args: argparse.Namespace) -> int:
    """Check the config once here (a typo fails before any worker starts), then run torchrun."""
    from zerograd import distributed, launch, own_data, runs
    from zerograd.experiment import check_data_spec
    from zerograd.models import check_trusted

    resuming = getattr(args, "run_dir", None) or getattr(args, "resume", None)
    if resuming and getattr(args, "recipe", None) is None and getattr(args, "data", None) is None:
        config = runs.resume_config(resuming)
        check_trusted(config["model"], trust_code=args.trust_code, origin=Path(resuming) / runs.CONFIG)
    else:
        config, _ = own_data.resolve_config(train_source(args), training_overrides(args))
        check_data_spec(config["data"])  # a data option's typo: one line here, not one per worker
    if job.fixed_world_size is not None:
        distributed.check_global_batch(config["batch_size"], job.fixed_world_size)
    argv = args.argv
    if job.max_restarts and not resuming and args.out is None:
        argv = [*argv, "--out", str(runs.new_run_dir(config["name"], create=True))]  # a restart must find the same run
    return launch.launch(job, argv)


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from zerograd.console import make_console, plain

    console = make_console()
    final = summary["final"]
    figures = "  ".join(f"{k} {v:.4f}" for k, v in final.items()
                        if isinstance(v, float) and k not in ("weight", "bias"))
    epochs = summary["epochs_completed"]
    console.print(f"[bold]{plain(summary['recipe'])}[/]: {epochs} epoch{'' if epochs == 1 else 's'} in "
                  f"{summary['train_seconds']:.1f} s  "
                  f"{plain(figures)}", soft_wrap=True)
    if "weight" in summary:
        console.print(f"learned: y = {summary['weight']:.4f} x + {summary['bias']:.4f}")
    if "test_accuracy" in final:
        console.print(f"final test accuracy: {final['test_accuracy']:.4f}")
    if summary.get("init"):  # where the weights started (what did not fit was a warning at the start)
        init = summary["init"]
        console.print(f"init: {init['loaded']} tensors from {plain(init['from'])}", soft_wrap=True)
    if summary.get("weights"):  # ema / swa
        console.print(f"weights: {plain(summary['weights'])}; evaluated and saved", soft_wrap=True)
    if summary.get("stop_reason") == "early_stopping":
        console.print(f"stopped early after epoch {summary['epochs_completed']} (no improvement); "
                      f"weights and figures from the best epoch, {summary['best_epoch']}")
    console.print(f"run directory: {plain(run_dir)}", soft_wrap=True)
    if any((run_dir / "plots").glob("*.png")):  # none when they could not be written (a warning said so)
        console.print(f"plots: {plain(run_dir / 'plots')}  (report: zerograd report {plain(run_dir)})", soft_wrap=True)


def cmd_sweep(args: argparse.Namespace) -> int:
    from zerograd.sweep import print_result as print_sweep_result
    from zerograd.sweep import sweep as run_sweep

    result = run_sweep(args.recipe, grid=args.grid, space=args.space, random=args.random, optuna=args.optuna,
                       seeds=args.seeds, sweep_seed=args.sweep_seed, overrides=training_overrides(args), out=args.out,
                       jobs=args.jobs, metric=args.metric, median_stop=args.median_stop, quiet=args.quiet,
                       cv=args.cv)
    if args.quiet:
        print_sweep_result(result)
    return 0


def cmd_cv(args: argparse.Namespace) -> int:
    from zerograd.sweep import cross_validate, print_cv

    result = cross_validate(train_source(args), folds=args.folds, overrides=training_overrides(args), out=args.out,
                            jobs=args.jobs, metric=args.metric, cv_seed=args.cv_seed, quiet=args.quiet)
    if args.quiet:
        print_cv(result)
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from zerograd import config as configs
    from zerograd.lr_find import lr_find_config

    overrides = dict(configs.parse_assignment(text) for text in args.assignments)
    result, folder = lr_find_config(args.recipe, overrides=overrides, out=args.out, start_lr=args.start_lr,
                                    end_lr=args.end_lr, steps=args.steps)
    ended = "the loss diverged" if result.stop_reason == "diverged" else f"reached lr {result.lrs[-1]:.2g}"
    print(f"lr-find: {len(result.lrs)} steps from lr {result.lrs[0]:.2g}, stopped because {ended}")
    if result.suggested_lr is None:
        print("suggested lr: none (the loss never fell; try a larger --end-lr or more --steps)")
    else:
        print(f"suggested lr: {result.suggested_lr:.3g}  (steepest fall of the smoothed loss)")
    print(f"plot: {result.plot}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from zerograd.reporting.plots import write_plots  # matplotlib: loaded by the commands that draw

    written = write_plots(args.run_dir, out_dir=args.out, device=args.device, trust_code=args.trust_code)
    for path in written:
        print(path)
    if not written:  # e.g. a run stopped inside its first epoch: no epoch record, no weights yet
        print(f"no plots: {args.run_dir} has no finished epoch yet (its curves start with the first one); "
              f"continue it with `zerograd resume {args.run_dir}`", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from zerograd.reporting.report import write_report  # matplotlib, as for plot

    print(write_report(args.run_dir, args.out, replot=args.replot, trust_code=args.trust_code))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from zerograd.console import make_console, plain, print_whole
    from zerograd.reporting.compare import compare_runs, comparison_table, default_plot_path, plot_comparison

    rows = compare_runs(args.run_dirs, metric=args.metric)
    plot = plot_comparison(rows, args.out or default_plot_path(rows))
    if args.json:
        print(json.dumps({"runs": [r.to_dict() for r in rows], "plot": str(plot)}, indent=2))
        return 0
    console = make_console()
    print_whole(console, comparison_table(rows))
    console.print(f"overlay plot: {plain(plot)}", soft_wrap=True)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from zerograd import api

    results = api.evaluate_run(args.run_dir, device=args.device, trust_code=args.trust_code, tta=args.tta)
    print("  ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from zerograd import predictor

    model = predictor.load(args.run_dir, trust_code=args.trust_code, tta=args.tta)
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    for path in args.files:
        try:
            predictions = model.predict(path, top=args.top)
        except DataError as error:  # e.g. "the image looks blank": say which of the files
            raise (error if path in str(error) else DataError(f"{path}: {error}")) from None
        rows = predictions if isinstance(predictions, list) else [predictions]
        for row, prediction in enumerate(rows):
            label = path if not isinstance(predictions, list) else f"{path}[{row}]"
            print(format_prediction(label, prediction, as_json=args.json))
    return 0


def format_prediction(label: str, prediction: Prediction, *, as_json: bool) -> str:
    """`digit.png: 7  (7 98.1%, 1 1.2%, 9 0.3%)`, or one JSON object per input."""
    if as_json:
        return json.dumps({"input": label, **prediction.to_dict()})
    if prediction.probability is None:  # regression: `rows.csv[0]: progression: 151.3`
        return f"{label}: {prediction}"
    shown = ", ".join(f"{name} {p:.1%}" for name, p in prediction.top)
    return f"{label}: {prediction.label}  ({shown})"


def cmd_serve(args: argparse.Namespace) -> int:
    from zerograd.serve import serve  # Starlette and uvicorn: loaded by this command only

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    serve(args.run_dir, args.host, args.port, top=args.top, quiet=args.quiet, trust_code=args.trust_code)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from zerograd.export import export_run

    result = export_run(args.run_dir, args.format, args.out, trust_code=args.trust_code)
    print(f"exported {result.path} ({result.format}); checked on {result.checked_inputs} inputs against PyTorch: "
          f"largest difference {result.max_abs_diff:.2g}")
    return 0


def train_source(args: argparse.Namespace) -> str | dict[str, Any]:
    """What `train` trains: the recipe or config file, or the config `--data PATH` stands for
    (`own_data.complete` fills in the rest, as for a config file that names only its data)."""
    if args.data is None:
        if args.recipe is None:
            raise ConfigError("give a recipe or config file to train (see `zerograd recipes`), or --data PATH to train "
                              "on your own data")
        given = [flag for flag, key in OWN_DATA_FLAGS.items() if getattr(args, key, None) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with --data PATH; for a recipe "
                              "use --set (e.g. --set model.name=...)")
        return args.recipe
    if args.recipe is not None:
        raise ConfigError(f"give a recipe or config ({args.recipe}) or --data PATH, not both")
    from zerograd import own_data

    return own_data.data_source(args.data, **{key: getattr(args, key, None) for key in OWN_DATA_FLAGS.values()})


if __name__ == "__main__":
    raise SystemExit(main())
