"""The `zerograd` command: a thin shell over the library API.

Every mistake a user can make ends as one line on stderr and exit code 2; a training run that is
interrupted exits 130.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from zerograd import api
from zerograd import config as configs
from zerograd.errors import ConfigError, DataError, ZerogradError

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.handler(args) or 0)
    except ZerogradError as error:
        print(f"zerograd: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("zerograd: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zerograd", description="Train PyTorch networks with one command.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    recipes = commands.add_parser("recipes", help="list the built-in recipes")
    recipes.set_defaults(handler=cmd_recipes)

    train = commands.add_parser("train", help="train a recipe or a YAML config and write a run directory")
    train.add_argument("recipe", metavar="RECIPE|FILE.yaml", help="a recipe name (see `zerograd recipes`) or a config file")
    add_training_arguments(train)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="re-load a run's weights and print its test loss and metrics")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(handler=cmd_evaluate)

    predict = commands.add_parser("predict", help="predict classes for images (PNG/JPEG) or rows of a .npy file")
    predict.add_argument("run_dir", metavar="RUN_DIR")
    predict.add_argument("files", metavar="FILE", nargs="+")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    predict.add_argument("--json", action="store_true", help="print one JSON object per input")
    predict.set_defaults(handler=cmd_predict)
    return parser


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                        help="set any config key, dotted for nested ones (e.g. --set model.sizes=[784,128,10])")
    parser.add_argument("--out", help="run directory (default runs/<recipe>-<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = dict(configs.parse_assignment(text) for text in args.assignments)
    for key in ("epochs", "lr", "batch_size", "seed", "device"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    return overrides


def cmd_recipes(args: argparse.Namespace) -> int:
    for name in configs.recipe_names():
        description = configs.load_source(name).get("description", "")
        print(f"{name:20s} {description}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    run = api.train(args.recipe, overrides=training_overrides(args), out=args.out, quiet=args.quiet)
    print_summary(run.summary, run.dir)
    return 0


def print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    console = Console(highlight=False)
    final = summary["final"]
    figures = "  ".join(f"{k} {v:.4f}" for k, v in final.items() if isinstance(v, float) and k not in ("weight", "bias"))
    console.print(f"[bold]{summary['recipe']}[/]: {summary['epochs_completed']} epochs in {summary['train_seconds']:.1f} s  {figures}")
    if "weight" in summary:
        console.print(f"learned: y = {summary['weight']:.4f} x + {summary['bias']:.4f}")
    if "test_accuracy" in final:
        console.print(f"final test accuracy: {final['test_accuracy']:.4f}")
    console.print(f"run directory: {run_dir}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    results = api.evaluate_run(args.run_dir, device=args.device)
    print("  ".join(f"{k} {v:.4f}" for k, v in results.items()))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model, config = api.load_run(args.run_dir)
    summary = api.runs.read_summary(Path(args.run_dir))
    class_names = summary.get("class_names")
    for path in args.files:
        inputs = load_inputs(Path(path), summary.get("input_shape"), config)
        with torch.no_grad():
            outputs = model(inputs).float()
        for row, output in enumerate(outputs):
            label = path if len(outputs) == 1 else f"{path}[{row}]"
            print(format_prediction(label, output, class_names, args.top, as_json=args.json))
    return 0


def format_prediction(label: str, output: torch.Tensor, class_names: list[str] | None, top: int, *, as_json: bool) -> str:
    if class_names is None:  # regression: print the values
        values = output.tolist()
        return json.dumps({"input": label, "output": values}) if as_json else f"{label}: {values}"
    probabilities = _probabilities(output)
    k = min(top, len(probabilities))
    best = probabilities.topk(k)
    ranked = [{"label": class_names[i], "probability": round(float(p), 4)} for p, i in zip(best.values, best.indices)]
    if as_json:
        return json.dumps({"input": label, "top": ranked})
    shown = ", ".join(f"{r['label']} {r['probability']:.1%}" for r in ranked)
    return f"{label}: {ranked[0]['label']}  ({shown})"


def _probabilities(output: torch.Tensor) -> torch.Tensor:
    """Softmax of logits; models ending in log_softmax give log-probabilities, so exp is enough."""
    if output.max() <= 0 and torch.allclose(output.exp().sum(), torch.tensor(1.0), atol=1e-3):
        return output.exp()
    return output.softmax(dim=0)


def load_inputs(path: Path, input_shape: list[int] | None, config: dict[str, Any]) -> torch.Tensor:
    """A batch of model inputs from an image or a .npy file, preprocessed like the training data."""
    if not path.is_file():
        raise DataError(f"input file {path} does not exist")
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False).astype(np.float32)
        x = torch.from_numpy(array)
        if x.dim() == 1 and input_shape and x.numel() == int(np.prod(input_shape)):
            x = x.unsqueeze(0)
    else:
        x = _load_image(path, input_shape)
    if input_shape:
        expected = int(np.prod(input_shape))
        if x[0].numel() != expected:
            raise DataError(f"{path}: each input has {x[0].numel()} values but the model takes {expected} ({'x'.join(map(str, input_shape))})")
        x = x.reshape(-1, *input_shape)
    data = config.get("data", {})
    if data.get("normalize") and data.get("dataset") in ("mnist", "fashion-mnist"):
        from zerograd.data import DATASETS

        dataset = DATASETS[data["dataset"]]
        x = (x - dataset.mean) / dataset.std
    return x


def _load_image(path: Path, input_shape: list[int] | None) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path).convert("L")
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path} is not an image zerograd can read ({error}); give a PNG or JPEG") from None
    if input_shape and len(input_shape) == 3:
        image = image.resize((input_shape[2], input_shape[1]))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0)


if __name__ == "__main__":
    raise SystemExit(main())
