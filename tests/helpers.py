"""Small data makers shared by several test modules (importable: pytest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path

import torch


def band_image(label: int, rng, *, noise: int = 40, bright: int | None = 255):
    """A 28x28 uint8 image of class `label`: faint noise with a bright band at rows 2k..2k+5
    (`bright=None`: a random brightness in [120, 256))."""
    import numpy as np

    image = rng.integers(0, noise, (28, 28)).astype(np.uint8)
    image[2 * label: 2 * label + 6, 4:24] = rng.integers(120, 256) if bright is None else bright
    return image


def write_band_idx(root: Path, sizes: dict[str, int], **image_options) -> Path:
    """Small MNIST-format IDX files of band images (`sizes`: {"train": n, "t10k": n}) in `root`."""
    import numpy as np

    from zerograd.data.idx import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in sizes.items():
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz",
                  np.stack([band_image(int(k), rng, **image_options) for k in labels]))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


class PairDataset(torch.utils.data.Dataset):
    """A map-style Dataset that is not whole tensors, so fit takes the generic DataLoader path."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple:
        return self.x[index], self.y[index]
