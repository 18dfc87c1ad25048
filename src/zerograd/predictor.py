"""Use a finished run: `zerograd.load(RUN_DIR)` gives a ready model, no training code needed.

    model = zerograd.load("runs/mnist-mlp-20260101-120000")
    model.predict("my_digit.png")           # Prediction(label='7', probability=0.98, top=[...])
    model.predict(["a.png", "b.png"])       # a list of Predictions
    model.predict({"sepal_length": 5.1, ...})  # a table run: one row by column name
    model.predict_proba(x)                  # class probabilities, NumPy [N, classes]

The run directory holds everything: the architecture (config.yaml), the weights
(model.safetensors), and how raw inputs become model inputs (preprocessing.json: feature
standardisation, image size/mode/normalisation, class names). Inputs may be file paths (images,
.csv, .npy), PIL images, NumPy arrays, tensors, or lists of those. Photos and drawings given to an
MNIST run are prepared the way MNIST digits were made (see `zerograd.digits`).
"""
from __future__ import annotations

import difflib
import io
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from zerograd import runs
from zerograd.data.datasets import DATASETS
from zerograd.data.image_decode import ImageSpec, to_8bit, upright
from zerograd.data.images import Augment
from zerograd.data.tabular import (
    TABLE_FILE_SUFFIXES,
    RawTable,
    TableEncoder,
    from_frame,
    load_numpy,
    read_table_file,
)
from zerograd.digits import WORK_SIDE, light_on_dark, mnist_style, shrink
from zerograd.errors import ConfigError, DataError, RunDirError
from zerograd.losses import loss_name, task_of
from zerograd.tta import tta_spec, with_tta

IMAGE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Prediction:
    """One input's prediction: the best class and its probability, and the top classes; for a
    regression run `label` is the predicted value (a list when the model predicts several)."""

    label: Any
    probability: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    output: list[float] = field(default_factory=list)
    target: str | None = None  # regression: the predicted column's name (a table's target)

    def to_dict(self) -> dict[str, Any]:
        if self.probability is None:
            return {"label": self.label, "output": self.output} | ({"target": self.target} if self.target else {})
        return {"label": self.label, "probability": self.probability,
                "top": [{"label": label, "probability": p} for label, p in self.top]}

    def __str__(self) -> str:
        if self.probability is None:  # `progression: 151.3`
            values = self.label if isinstance(self.label, list) else [self.label]
            shown = ", ".join(short_number(v) for v in values)
            return f"{self.target}: {shown}" if self.target else shown
        return f"{self.label} ({self.probability:.1%})"


class Predictor:
    """A trained model with its preprocessing: raw inputs in, predictions out."""

    def __init__(self, model: nn.Module, preprocessing: dict[str, Any], *, loss: Any = "cross_entropy",
                 config: dict[str, Any] | None = None, run_dir: Path | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocessing = preprocessing
        self.config = config or {}
        self.run_dir = run_dir
        self.task = preprocessing.get("task") or task_of(loss)
        self.log_probabilities = loss_name(loss) == "nll"  # the model ends in log_softmax
        self.input_shape: list[int] = list(preprocessing.get("input_shape") or [])
        names = preprocessing.get("class_names")
        self.class_names: list[str] | None = list(names) if names else None
        self.kind = preprocessing.get("kind", "tensor")
        self._image = ImageSpec.from_dict(preprocessing) if self.kind == "image" else None
        self._table = TableEncoder.from_dict(preprocessing) if self.kind == "table" else None
        self._lock = threading.Lock()  # one forward pass at a time (the page's server is threaded)

    def __repr__(self) -> str:
        classes = f", classes={self.class_names[:10]}" if self.class_names else ""
        return f"Predictor({self.run_dir or 'model'}: {self.task}, input {self.input_shape}{classes})"

    # -- the public calls --------------------------------------------------------------------------

    def predict(self, inputs: Any, *, top: int = 3) -> Prediction | list[Prediction]:
        """A `Prediction` for one input (a path, an image, one row or sample), a list for several."""
        batch, single = self.prepare(inputs)
        predictions = self._predictions(self._forward(batch), top)
        return predictions[0] if single else predictions

    def predict_proba(self, inputs: Any) -> np.ndarray:
        """Class probabilities [N, classes] (N = 1 for a single input)."""
        if self.task != "classification":
            raise DataError("predict_proba is for classification runs; this run predicts values, use predict")
        batch, _ = self.prepare(inputs)
        return self._probabilities(self._forward(batch)).numpy()

    def outputs(self, inputs: Any) -> torch.Tensor:
        """The model's raw outputs (logits, or values for regression) for raw `inputs`, prepared as
        `predict` prepares them."""
        batch, _ = self.prepare(inputs)
        return self._forward(batch)

    def prepare(self, inputs: Any) -> tuple[torch.Tensor, bool]:
        """(model-ready float batch on the CPU, whether `inputs` was a single input)."""
        if isinstance(inputs, (list, tuple)) and inputs and not self._is_row(inputs):
            parts = [self.prepare(item)[0] for item in inputs]
            return torch.cat(parts), False
        if isinstance(inputs, (str, Path)):
            return self._from_file(Path(inputs))
        if self._image is not None:
            return self._prepare_image_input(inputs)
        if self._table is not None:
            return self._prepare_table_input(inputs)
        return self._prepare_tensor(inputs)

    # -- forward and results -----------------------------------------------------------------------

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] == 0:
            raise DataError("there is nothing to predict: the inputs are empty (0 rows)")
        with self._lock, torch.no_grad():
            return self.model(batch.to(self.device)).float().cpu()

    def _probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.exp() if self.log_probabilities else outputs.softmax(dim=1)

    def _predictions(self, outputs: torch.Tensor, top: int) -> list[Prediction]:
        if self.task != "classification":
            values = outputs.reshape(len(outputs), -1)
            values = (self._table.decode_outputs(values) if self._table is not None else values).tolist()  # own units
            target = self.preprocessing.get("target")
            target = target if isinstance(target, str) else None
            return [Prediction(v[0] if len(v) == 1 else v, output=v, target=target) for v in values]
        probabilities = self._probabilities(outputs.reshape(len(outputs), -1))
        names = self.class_names or [str(i) for i in range(probabilities.shape[1])]
        k = max(1, min(top, probabilities.shape[1]))
        best = probabilities.topk(k, dim=1)
        results = []
        for row, (values, indices) in enumerate(zip(best.values.tolist(), best.indices.tolist())):
            ranked = [(names[i] if i < len(names) else str(i), round(float(p), 6)) for p, i in zip(values, indices)]
            results.append(Prediction(ranked[0][0], ranked[0][1], ranked, outputs[row].tolist()))
        return results

    # -- inputs ------------------------------------------------------------------------------------

    def _from_file(self, path: Path) -> tuple[torch.Tensor, bool]:
        if path.is_dir():
            raise DataError(f"{path} is a folder; give predict the files in it (e.g. {path}/*)")
        if not path.is_file():
            raise DataError(f"input file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            array = load_numpy(path)
            if not isinstance(array, np.ndarray):
                raise DataError(f"{path} is an .npz archive (arrays {', '.join(array) or 'none'}), not one .npy array; "
                                "give predict one array saved with np.save")
            texts = self._table is not None and any(c.kind == "category" for c in self._table.columns)
            if array.dtype.kind not in ("biuf" + ("US" if texts else "")):
                raise DataError(f"{path} holds {_dtype_words(array.dtype)}; this run takes numbers"
                                + (" (and texts for its category columns)" if texts else ""))
            return self.prepare(array)
        if suffix in TABLE_FILE_SUFFIXES and self._table is not None:
            return self._table_rows(read_table_file(path)), False
        if self._image is None and suffix in IMAGE_FILE_SUFFIXES:
            raise DataError(f"{path} is an image, but this run was trained on {self.kind} data of shape "
                            f"{self.input_shape}")
        if self._image is None:
            tables = " or table files (.csv, .parquet, .feather)" if self._table is not None else ""
            raise DataError(f"{path}: give this run .npy arrays{tables}")
        return self._prepare_image_input(self.read_image(path))

    def read_image(self, source: str | Path | bytes, *, max_pixels: int | None = None) -> Image.Image:
        """An image file or uploaded bytes, as small as this run allows: a large JPEG decoded at
        reduced scale (see `open_image`), then made 8-bit grey or colour, upright, and for digit
        runs shrunk to the digit preparation's working size (thin strokes kept). The full-size
        decoded picture is let go at once, so it is never held during the prediction."""
        image = open_image(source, max_pixels=max_pixels, size=self.decode_side)
        spec = self._image
        if spec is None:
            return image
        if self.preprocessing.get("style") in ("digit", "centered"):
            return Image.fromarray(shrink(np.asarray(to_8bit(upright(image), "L"))))
        return to_8bit(upright(image), "L" if spec.mode == "grayscale" else "RGB")

    @property
    def decode_side(self) -> int | None:
        """The smallest side an image must keep for this run: the model's input size, or the digit
        preparation's working size (None for runs that take no images)."""
        if self._image is None:
            return None
        return WORK_SIDE if self.preprocessing.get("style") in ("digit", "centered") else max(self._image.size)

    def _prepare_image_input(self, inputs: Any) -> tuple[torch.Tensor, bool]:
        spec = self._image
        assert spec is not None
        if isinstance(inputs, Image.Image):
            return self._normalise(self._image_pixels(inputs))[None], True
        # Arrays and tensors are images already at the model's size (pixels 0..255 as uint8, else
        # 0..1), one or a batch, also flattened; pictures of other sizes go in as files or PIL images.
        array = _unit(_as_array(inputs))
        channels, height, width = shape = tuple(spec.input_shape)
        values = channels * height * width
        if array.shape == shape or (channels == 1 and array.shape == (height, width)) or array.shape == (values,):
            return self._normalise(array.reshape(shape))[None], True
        if array.ndim >= 2 and array.shape[1:] in (shape, (height, width) if channels == 1 else shape, (values,)):
            return self._normalise(array.reshape(-1, *shape)), False
        wanted = f"the model takes {values} ({'x'.join(map(str, shape))})"
        found = (f"each input has {array.shape[-1]} values" if array.ndim == 2
                 else f"the input has shape {list(array.shape)}")
        raise DataError(f"{found} but {wanted}; give pictures of other sizes as image files or PIL images")

    def _image_pixels(self, image: Image.Image) -> np.ndarray:
        """Float [C, H, W] in 0..1 from a PIL image: digit-style for MNIST runs, else resized."""
        spec = self._image
        assert spec is not None
        style = self.preprocessing.get("style")
        if style in ("digit", "centered") and (image.height, image.width) != spec.size:
            return mnist_style(image, box=20 if style == "digit" else spec.size[0], size=spec.size[0],
                               by_mass=style == "digit")[None]
        if style in ("digit", "centered"):  # already MNIST's size: laid out already, only made light-on-dark
            return light_on_dark(image)[None]
        return spec.decode(image).astype(np.float32) / 255.0

    def _normalise(self, pixels: np.ndarray) -> torch.Tensor:
        spec = self._image
        assert spec is not None
        x = torch.as_tensor(np.ascontiguousarray(pixels), dtype=torch.float32)
        shape = (-1, 1, 1) if x.dim() == 3 else (1, -1, 1, 1)
        return (x - torch.tensor(spec.mean).view(shape)) / torch.tensor(spec.std).view(shape)

    def _prepare_table_input(self, inputs: Any) -> tuple[torch.Tensor, bool]:
        encoder = self._table
        assert encoder is not None
        if isinstance(inputs, dict):
            return self._table_rows(_rows_table([inputs])), True
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(r, dict) for r in inputs):
            return self._table_rows(_rows_table(list(inputs))), False
        if encoder.columns and hasattr(inputs, "columns") and callable(getattr(inputs, "to_numpy", None)):  # by name
            return self._table_rows(from_frame(inputs)), False
        if encoder.columns:
            rows = inputs.numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs, dtype=object)
            single = rows.ndim == 1
            return torch.from_numpy(encoder.transform_array(rows)), single
        array = _as_array(inputs).astype(np.float64)
        single = list(array.shape) == encoder.input_shape
        x = torch.from_numpy(encoder.transform_array(array))
        return (x[None] if single else x), single

    def _table_rows(self, table: RawTable) -> torch.Tensor:
        encoder = self._table
        assert encoder is not None
        missing = [name for name in encoder.feature_names if name not in table.columns]
        if missing:
            extra = [name for name in table.columns if name not in encoder.feature_names]
            hints = "".join(f' ("{name}" is there: did you mean "{close[0]}"?)' for name in extra
                            if (close := difflib.get_close_matches(name, missing, n=1, cutoff=0.6)))
            raise DataError(f"{table.source}: columns {missing} are missing{hints}; this run needs "
                            f"{', '.join(encoder.feature_names)}")
        return torch.from_numpy(encoder.transform(table))

    def _prepare_tensor(self, inputs: Any) -> tuple[torch.Tensor, bool]:
        x = torch.as_tensor(_as_array(inputs), dtype=torch.float32)
        single = bool(self.input_shape) and list(x.shape) == self.input_shape
        return (x[None] if single else x), single

    @staticmethod
    def _is_row(inputs: Sequence[Any]) -> bool:
        """A flat list of numbers/texts is one table row, not a list of inputs."""
        return all(isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in inputs) and not all(
            isinstance(v, str) for v in inputs
        )


def load(run_dir: str | Path, *, device: str = "cpu", trust_code: bool = False,
         tta: bool | dict | None = None) -> Predictor:
    """The trained model of a run directory, ready to predict (see `Predictor`). A model class of
    the user's own (`module:Class`) that the run's config names is code: it is imported only with
    `trust_code=True`. `tta` (None: as the run's config says) predicts images from the average over
    flipped and shifted views (see `zerograd.tta`)."""
    path = runs.require_run_dir(run_dir)
    config = runs.read_config(path)
    preprocessing = runs.read_preprocessing(path) or _preprocessing_from_summary(config, runs.read_summary(path))
    model = runs.load_model(path, config, preprocessing.get("input_shape"), trust_code=trust_code)
    model = _with_tta(model, tta_spec(tta, config.get("tta")), config, preprocessing)
    where = _device(device)
    try:
        return Predictor(model, preprocessing, loss=config["loss"], config=config, run_dir=path, device=where)
    except (KeyError, TypeError, ValueError) as error:  # a preprocessing.json the type checks let through
        raise RunDirError(f"{path / runs.PREPROCESSING} does not describe the inputs ({type(error).__name__}: "
                          f"{error}); "
                          "restore the file zerograd wrote, or train the run again") from None


def _with_tta(model: nn.Module, spec: Any, config: dict[str, Any], preprocessing: dict[str, Any]) -> nn.Module:
    """The model predicting on the average over views of each image, when `spec` asks for it: the
    views of the run's image augmentation (`data.augment`), or those `tta: {flip, crop}` names."""
    if not spec:
        return model
    if preprocessing.get("kind") != "image":
        raise ConfigError("tta averages over flipped and shifted views of images, and this run's inputs are not "
                          "images; leave tta off")
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    augment = Augment.parse(data.get("augment"), tuple(preprocessing.get("size") or (0, 0)))
    task = preprocessing.get("task") or task_of(config["loss"])
    return with_tta(model, spec, (augment.crop, augment.flip) if augment else None, task)


def _preprocessing_from_summary(config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """For runs written before preprocessing.json existed: what config and summary tell."""
    data = config.get("data", {}) if isinstance(config.get("data"), dict) else {}
    base = {"task": summary.get("task"), "class_names": summary.get("class_names"),
            "input_shape": summary.get("input_shape")}
    if data.get("dataset") in ("mnist", "fashion-mnist"):
        dataset = DATASETS[data["dataset"]]
        normalize = bool(data.get("normalize"))
        return base | {"kind": "image", "size": [28, 28], "mode": "grayscale", "fit": "pad",
                       "mean": [dataset.mean if normalize else 0.0], "std": [dataset.std if normalize else 1.0],
                       "style": "digit" if data["dataset"] == "mnist" else "centered", "input_shape": [1, 28, 28]}
    return base | {"kind": "tensor"}


def short_number(value: float) -> str:
    """A predicted value as people write it: 151.3, 0.4821, 1.2e+06 (not 151.27304077148438)."""
    value = float(value)
    return f"{value:.1f}" if 10 <= abs(value) < 1e6 else f"{value:.4g}"


def open_image(source: str | Path | bytes, *, max_pixels: int | None = None, size: int | None = None) -> Image.Image:
    """A PIL image from a file or from bytes (PNG, JPEG, ...); anything else is a DataError.

    `size`: the side the caller needs at least; a larger JPEG is then decoded at 1/2, 1/4 or 1/8 of
    its size (still at least `size`), which is far quicker and smaller. `max_pixels` refuses images
    that would decode to more pixels than that (a small file can hold a gigapixel image).
    """
    what = "the uploaded data" if isinstance(source, bytes) else str(source)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if size is not None:
            image.draft(None, (size, size))
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise DataError(f"{what} is a {image.width}x{image.height} image; the limit is {max_pixels:,} pixels")
        image.load()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = _without_reprs(error)
        raise DataError(f"{what} is not an image zerograd can read ({reason}); give a PNG or JPEG") from None
    return image


def _without_reprs(error: Exception) -> str:
    """Pillow's message without the object reprs it puts in (`<_io.BytesIO object at 0x...>`)."""
    text = re.sub(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>", "", str(error)).strip()
    return text or type(error).__name__


def _as_array(inputs: Any) -> np.ndarray:
    if isinstance(inputs, torch.Tensor):
        return inputs.detach().cpu().numpy()
    try:
        array = np.asarray(inputs)
        return array if array.dtype.kind in "biuf" else array.astype(np.float64)
    except (ValueError, TypeError) as error:
        raise DataError(f"cannot turn a {type(inputs).__name__} into an array of numbers ({error})") from None


def _dtype_words(dtype: np.dtype) -> str:
    kinds = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "dates", "m": "time spans",
             "V": "records"}
    return f"{kinds.get(dtype.kind, 'values')} ({dtype})"


def _unit(array: np.ndarray) -> np.ndarray:
    """Pixels in 0..1: uint8 arrays are divided by 255, uint16 (16-bit images) by 65535, float
    arrays are taken as they are."""
    if array.dtype in (np.uint8, np.uint16):
        return array.astype(np.float32) / float(np.iinfo(array.dtype).max)
    return array.astype(np.float32)


def _rows_table(rows: list[dict[str, Any]]) -> RawTable:
    names = list(dict.fromkeys(k for row in rows for k in row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) or v is None for v in values)
        columns[name] = (np.array([np.nan if v is None else float(v) for v in values]) if numeric
                         else np.array([("" if v is None else str(v)) for v in values], dtype=object))
    return RawTable(names, columns, "input")


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
