"""Data: IDX files, downloads, MNIST/Fashion-MNIST and the tutorials' synthetic data sets."""
from __future__ import annotations

from zerograd.data.datasets import (
    DATASETS,
    MNIST,
    FashionMNIST,
    find_dataset_dir,
    load_dataset,
)
from zerograd.data.download import download, download_first
from zerograd.data.idx import read_idx, write_idx
from zerograd.data.loader import TensorLoader, make_loader
from zerograd.data.synthetic import line_data, sinc_data

__all__ = [
    "DATASETS",
    "MNIST",
    "TensorLoader",
    "FashionMNIST",
    "download",
    "download_first",
    "find_dataset_dir",
    "line_data",
    "load_dataset",
    "make_loader",
    "read_idx",
    "sinc_data",
    "write_idx",
]
