"""The baselines: each tutorial's own training loop, written the way the tutorial writes it.

A per-sample `Dataset` whose `__getitem__` builds a PIL image from the uint8 array and converts it
the way torchvision's `ToTensor` does (written out here: torchvision is not used), a default
`DataLoader`, and the textbook loop of each tutorial:

- mnist-mlp: sentdex's "Deep learning with PyTorch" MLP (fc1..fc4, log_softmax + nll_loss,
  `net.zero_grad()`, Adam lr 1e-3, batch 10);
- fashion-cnn: deeplizard's Fashion-MNIST CNN (Adam lr 0.01, batch 100, `loss.item()` and
  `get_num_correct(...)` every batch);
- fashion-mlp: the PyTorch quickstart (Flatten-512-512-10, SGD, batch 64, `loss.item()` every
  100 batches), with the recipe's momentum 0.9 and shuffling (same hyper-parameters as zerograd).

The hyper-parameters come from the zerograd recipe of the same name, so both sides train the same
model with the same settings; only the machinery differs.

Run as a script, it is the tutorial's script as a whole process (bench/whole_process.py times it
against `zerograd train RECIPE`): it imports torch, numpy and PIL only (not zerograd), reads the
IDX files itself as torchvision's MNIST class does, trains the recipe's epochs, tests, prints:

    python bench/tutorial.py mnist-mlp --data DIR_WITH_THE_IDX_FILES --epochs 3 [--seed 0]
"""
from __future__ import annotations

import argparse
import gzip
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

IDX_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx_file(path: Path) -> np.ndarray:
    """An uint8 IDX file (raw or .gz), the way torchvision's `read_sn3_pascalvincent_tensor` reads it."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape).copy()  # writable, as torch wants


def dataset_dir(name: str) -> Path:
    """Where zerograd finds data set `name` (ZEROGRAD_DATA, Debian's package, the cache)."""
    from zerograd.data.datasets import find_dataset_dir

    directory = find_dataset_dir(name)
    if directory is None:
        raise SystemExit(f"{name} not found: set ZEROGRAD_DATA (make bench does) or run `make data`")
    return Path(directory)


def raw_arrays(name: str, train: bool, directory: Path | None = None,
               samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 images [N, 28, 28] and labels [N] of MNIST / Fashion-MNIST, as stored (the first
    `samples` of them when given)."""
    directory = directory or dataset_dir(name)
    arrays = []
    for stem in IDX_FILES[train]:
        path = directory / f"{stem}.gz" if (directory / f"{stem}.gz").is_file() else directory / stem
        arrays.append(read_idx_file(path)[:samples])
    return arrays[0], arrays[1]


def to_tensor(picture: Image.Image) -> torch.Tensor:
    """What torchvision's `transforms.ToTensor()` does to a mode-"L" PIL image."""
    array = np.array(picture, np.uint8, copy=True)
    image = torch.from_numpy(array).view(picture.size[1], picture.size[0], 1)
    return image.permute((2, 0, 1)).contiguous().to(dtype=torch.get_default_dtype()).div(255)


class TutorialImages(Dataset):
    """torchvision.datasets.MNIST's `__getitem__`: uint8 array -> PIL image -> ToTensor."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.data = torch.from_numpy(images)
        self.targets = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, target = self.data[index], int(self.targets[index])
        img = Image.fromarray(img.numpy(), mode="L")
        return to_tensor(img), target


class SentdexNet(nn.Module):
    """sentdex's MNIST MLP: 784-64-64-64-10, ReLU, log_softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 64)
        self.fc4 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = F.relu(self.fc3(x))
        x = self.fc4(x)
        return F.log_softmax(x, dim=1)


class DeeplizardNetwork(nn.Module):
    """deeplizard's Fashion-MNIST CNN: conv(1,6,5)-pool-conv(6,12,5)-pool-fc 192-120-60-10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5)
        self.conv2 = nn.Conv2d(in_channels=6, out_channels=12, kernel_size=5)
        self.fc1 = nn.Linear(in_features=12 * 4 * 4, out_features=120)
        self.fc2 = nn.Linear(in_features=120, out_features=60)
        self.out = nn.Linear(in_features=60, out_features=10)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t = F.max_pool2d(F.relu(self.conv1(t)), kernel_size=2, stride=2)
        t = F.max_pool2d(F.relu(self.conv2(t)), kernel_size=2, stride=2)
        t = F.relu(self.fc1(t.reshape(-1, 12 * 4 * 4)))
        t = F.relu(self.fc2(t))
        return self.out(t)


class QuickstartNetwork(nn.Module):
    """The PyTorch quickstart's network: Flatten-512-ReLU-512-ReLU-10."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


@dataclass
class TutorialResult:
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_cpu_seconds: list[float] = field(default_factory=list)
    test_accuracy: float = 0.0

    def timed_epoch(self) -> "EpochTimer":
        return EpochTimer(self)


class EpochTimer:
    """`with result.timed_epoch():` around one epoch's training loop records its wall and CPU time."""

    def __init__(self, result: TutorialResult) -> None:
        self.result = result

    def __enter__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.result.epoch_seconds.append(time.perf_counter() - self.wall)
        self.result.epoch_cpu_seconds.append(time.process_time() - self.cpu)


def _test_accuracy(model: nn.Module, loader: DataLoader, flatten: bool = False) -> float:
    """The tutorials' test loop: argmax over batches under no_grad."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for X, y in loader:
            output = model(X.view(-1, 28 * 28) if flatten else X)
            correct += int((output.argmax(dim=1) == y).sum())
            total += len(y)
    return correct / total


def _datasets(name: str, directory: Path | None, samples: int | None) -> tuple[TutorialImages, TutorialImages]:
    return (TutorialImages(*raw_arrays(name, True, directory, samples)),
            TutorialImages(*raw_arrays(name, False, directory)))


def run_mnist_mlp(epochs: int, seed: int, directory: Path | None = None, samples: int | None = None) -> TutorialResult:
    torch.manual_seed(seed)
    train, test = _datasets("mnist", directory, samples)
    trainset = DataLoader(train, batch_size=10, shuffle=True)
    testset = DataLoader(test, batch_size=10, shuffle=False)
    net = SentdexNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.001)
    result = TutorialResult()
    for _ in range(epochs):
        with result.timed_epoch():
            for data in trainset:
                X, y = data
                net.zero_grad()
                output = net(X.view(-1, 28 * 28))
                loss = F.nll_loss(output, y)
                loss.backward()
                optimizer.step()
    result.test_accuracy = _test_accuracy(net, testset, flatten=True)
    return result


def get_num_correct(preds: torch.Tensor, labels: torch.Tensor) -> int:
    return preds.argmax(dim=1).eq(labels).sum().item()


def run_fashion_cnn(epochs: int, seed: int, directory: Path | None = None, samples: int | None = None) -> TutorialResult:
    torch.manual_seed(seed)
    train_set, test_set = _datasets("fashion-mnist", directory, samples)
    network = DeeplizardNetwork()
    train_loader = DataLoader(train_set, batch_size=100, shuffle=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    result = TutorialResult()
    for _ in range(epochs):
        with result.timed_epoch():
            total_loss = 0
            total_correct = 0
            for batch in train_loader:
                images, labels = batch
                preds = network(images)
                loss = F.cross_entropy(preds, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * images.shape[0]
                total_correct += get_num_correct(preds, labels)
    result.test_accuracy = _test_accuracy(network, DataLoader(test_set, batch_size=1000))
    return result


def run_fashion_mlp(epochs: int, seed: int, directory: Path | None = None, samples: int | None = None) -> TutorialResult:
    torch.manual_seed(seed)
    training_data, test_data = _datasets("fashion-mnist", directory, samples)
    train_dataloader = DataLoader(training_data, batch_size=64, shuffle=True)
    test_dataloader = DataLoader(test_data, batch_size=64)
    model = QuickstartNetwork()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    result = TutorialResult()
    for _ in range(epochs):
        with result.timed_epoch():
            model.train()
            for batch, (X, y) in enumerate(train_dataloader):
                pred = model(X)
                loss = loss_fn(pred, y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if batch % 100 == 0:
                    loss, current = loss.item(), (batch + 1) * len(X)  # the quickstart prints these
    result.test_accuracy = _test_accuracy(model, test_dataloader)
    return result


TUTORIALS = {"mnist-mlp": run_mnist_mlp, "fashion-cnn": run_fashion_cnn, "fashion-mlp": run_fashion_mlp}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The tutorial's script for one recipe, as a whole process.")
    parser.add_argument("recipe", choices=list(TUTORIALS))
    parser.add_argument("--data", type=Path, required=True, help="the folder with the data set's four IDX files")
    parser.add_argument("--epochs", type=int, required=True, help="the recipe's epochs (the tutorials hard-code theirs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = TUTORIALS[args.recipe](args.epochs, args.seed, args.data)
    for epoch, seconds in enumerate(result.epoch_seconds, 1):
        print(f"epoch {epoch}: {seconds:.2f} s")
    print(f"test accuracy: {result.test_accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
