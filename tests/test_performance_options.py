"""The speed options (threads, channels_last, bf16, eval batch size) and the hot path's mechanics:
they work, and they leave the maths alone where they should. No timings are asserted here (the
benchmarks in bench/ do that); the fast recipes' accuracy bars are checked on the real data."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zerograd
from zerograd import performance
from zerograd.callbacks import Callback
from zerograd.data.loader import TensorLoader, epoch_permutation, fits_on_device, make_loader
from zerograd.errors import ConfigError
from zerograd.fast import heap
from zerograd.fast import optimizers as fused
from zerograd.metrics import Accuracy
from zerograd.models import TutorialCNN, build_model, compact_cnn, mlp
from zerograd.state import EpochTotals


def images(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])


class ThreadSpy(Callback):
    """Records the intra-op thread count while the loop runs."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_batch_end(self, state) -> None:
        self.seen.add(torch.get_num_threads())


# ---- threads --------------------------------------------------------------------------------

def test_threads_option_is_used_while_training_and_given_back() -> None:
    before = torch.get_num_threads()
    spy = ThreadSpy()
    zerograd.fit(mlp([784, 16, 10]), images(), epochs=1, batch_size=16, threads=1, callbacks=[spy], device="cpu")
    assert spy.seen == {1}
    assert torch.get_num_threads() == before


def test_automatic_threads_use_one_thread_for_a_small_step(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in performance.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    spy = ThreadSpy()
    zerograd.fit(mlp([784, 16, 10]), images(), epochs=1, batch_size=16, callbacks=[spy], device="cpu")
    assert spy.seen == {1}
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("idle", [None, 8.0, 0.9, 0.2])
def test_automatic_threads_for_a_big_step_do_not_depend_on_the_load(monkeypatch: pytest.MonkeyPatch, idle) -> None:
    """The issue: the count came from the cores idle at the start of `fit`, so a busy machine
    trained other weights. Now it is one per usable core, whatever the load."""
    for name in (*performance.THREAD_ENV_VARS, performance.CPU_SHARE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(performance, "SMALL_STEP_FLOPS", 1.0)  # every step counts as big
    monkeypatch.setattr(performance, "idle_cores", lambda seconds=0.1: idle)
    before = torch.get_num_threads()
    spy = ThreadSpy()
    zerograd.fit(mlp([784, 16, 10]), images(), epochs=1, batch_size=16, callbacks=[spy], device="cpu")
    assert spy.seen == {min(before, performance.usable_cores())}
    assert torch.get_num_threads() == before


def test_automatic_threads_use_the_launchers_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under `--nproc N` each worker gets its share; the OMP_NUM_THREADS the launcher set with it
    is no user's choice, and does not pin the count."""
    monkeypatch.setattr(performance, "SMALL_STEP_FLOPS", 1.0)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv(performance.CPU_SHARE, "1")
    assert performance.usable_cores() == 1 and not performance.threads_pinned_by_environment()
    assert performance.auto_threads(mlp([784, 16, 10]), images(8)[0], torch.device("cpu")) == 1
    monkeypatch.delenv(performance.CPU_SHARE)
    assert performance.threads_pinned_by_environment()  # now it is the user's


def test_busy_cores_count_the_cores_other_processes_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    for idle, threads, busy in ((2.0, 2, 0), (1.1, 2, 1), (0.1, 2, 2), (0.1, 1, 0), (30.0, 16, 0), (10.0, 16, 6)):
        monkeypatch.setattr(performance, "idle_cores", lambda seconds=0.1, idle=idle: idle)
        assert performance.busy_cores(threads) == busy, (idle, threads)
    monkeypatch.setattr(performance, "idle_cores", lambda seconds=0.1: None)  # no /proc/stat: no warning
    assert performance.busy_cores(2) == 0


def test_idle_cores_reads_proc_stat_deltas(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = iter([
        [(100, 1000), (100, 1000)],  # (idle, total) jiffies per core
        [(200, 1100), (110, 1100)],  # core 0 idle the whole window, core 1 busy 90% of it
    ])
    monkeypatch.setattr(performance, "_cpu_times", lambda cores: next(samples))
    assert performance.idle_cores(seconds=0.0) == pytest.approx(1.1)


def test_cpu_times_parse_this_machines_proc_stat() -> None:
    times = performance._cpu_times(None)
    if times is None:
        pytest.skip("no /proc/stat on this system")
    assert all(0 <= idle <= total for idle, total in times)


def test_automatic_threads_leave_a_users_omp_num_threads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(performance.CPU_SHARE, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert performance.auto_threads(mlp([784, 16, 10]), images(8)[0], torch.device("cpu")) == torch.get_num_threads()


def test_training_flops_count_linear_and_conv_layers_exactly() -> None:
    x = images(4)[0]
    # Linear: 2 * batch * in * out, per layer; the step costs three forward passes.
    assert performance.training_flops(mlp([784, 16, 10]), x) == 3 * 2 * 4 * (784 * 16 + 16 * 10)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    assert performance.training_flops(conv, x) == 3 * 2 * 4 * (2 * 26 * 26 * 9 + 2 * 26 * 26 * 10)


def test_training_flops_leave_the_model_as_it_was() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 10))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    performance.training_flops(model, images(8)[0])
    assert model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics too
    assert torch.equal(rng, torch.get_rng_state())
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())


def test_training_flops_of_a_model_that_cannot_run_is_none() -> None:
    assert performance.training_flops(nn.Linear(3, 2), images(2)[0]) is None


# ---- retained heap --------------------------------------------------------------------------

class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_retained_heap_raises_the_trim_threshold_and_puts_the_defaults_back(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: fake)
    with heap.retained_heap():
        assert ("mallopt", heap._M_TRIM_THRESHOLD, heap._KEEP_FREED_UP_TO) in fake.calls
        during = len(fake.calls)
    after = fake.calls[during:]
    assert ("mallopt", heap._M_TRIM_THRESHOLD, heap._GLIBC_DEFAULT_THRESHOLD) in after
    assert ("mallopt", heap._M_MMAP_THRESHOLD, heap._GLIBC_DEFAULT_THRESHOLD) in after
    assert after[-1] == ("malloc_trim", 0)


def test_retained_heap_restores_even_when_training_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: fake)
    with pytest.raises(RuntimeError), heap.retained_heap():
        raise RuntimeError("boom")
    assert fake.calls[-1] == ("malloc_trim", 0)


def test_nested_retained_heaps_leave_the_settings_to_the_outermost(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: fake)
    with heap.retained_heap():
        with heap.retained_heap():  # e.g. a fit inside a fit
            pass
        assert ("malloc_trim", 0) not in fake.calls  # the outer run keeps its setting
    assert fake.calls.count(("malloc_trim", 0)) == 1
    assert fake.calls.count(("mallopt", heap._M_TRIM_THRESHOLD, heap._KEEP_FREED_UP_TO)) == 1


def test_retained_heap_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_glibc", lambda: None)
    with heap.retained_heap():
        pass


# ---- channels_last and bf16 -----------------------------------------------------------------

def test_channels_last_stores_conv_weights_nhwc_and_trains_the_same_model() -> None:
    data = images(96)
    torch.manual_seed(0)
    plain = TutorialCNN()
    torch.manual_seed(0)
    nhwc = TutorialCNN()
    zerograd.fit(plain, data, epochs=1, batch_size=32, lr=1e-3, device="cpu", threads=1)
    zerograd.fit(nhwc, data, epochs=1, batch_size=32, lr=1e-3, device="cpu", threads=1, channels_last=True)
    assert nhwc.conv2.weight.is_contiguous(memory_format=torch.channels_last)  # (conv1's one input channel: both)
    assert not plain.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    # The same maths in another memory layout: equal up to float rounding.
    torch.testing.assert_close(weights(nhwc), weights(plain), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("build", [TutorialCNN, compact_cnn])
def test_zoo_cnns_give_the_same_outputs_in_either_layout(build) -> None:
    torch.manual_seed(0)
    model = build().eval()
    x = images(8)[0]
    expected = model(x)
    nhwc = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(nhwc(x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


def test_channels_last_option_is_a_config_key_too() -> None:
    config = zerograd.config.resolve("mnist-fast", {"channels_last": False})
    assert config["channels_last"] is False
    with pytest.raises(ConfigError, match="channels_last"):
        zerograd.config.resolve("mnist-fast", {"channels_last": "yes"})


def test_bf16_training_stays_close_to_fp32_on_a_small_cnn() -> None:
    data = images(128)
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = compact_cnn()
        history = zerograd.fit(model, data, eval_data=data, epochs=2, batch_size=32, lr=1e-3, precision=precision,
                               device="cpu", threads=1, channels_last=True)
        runs[precision] = history.last
    assert runs["bf16"]["train_loss"] == pytest.approx(runs["fp32"]["train_loss"], rel=0.05)


def test_eval_batch_size_does_not_change_the_test_numbers() -> None:
    data = images(200)
    results = []
    for eval_batch_size in (7, 200, 1000):
        torch.manual_seed(0)
        history = zerograd.fit(mlp([784, 16, 10]), data, eval_data=data, epochs=1, batch_size=50,
                               eval_batch_size=eval_batch_size, device="cpu", threads=1)
        results.append(history.last)
    for other in results[1:]:
        assert other["test_accuracy"] == results[0]["test_accuracy"]
        assert other["test_loss"] == pytest.approx(results[0]["test_loss"], rel=1e-5)


# ---- the hot path's mechanics ---------------------------------------------------------------

def reference_batches(tensors, batch_size: int, seed: int, epoch: int, shuffle: bool) -> list[tuple[torch.Tensor, ...]]:
    """The loader's contract written plainly: the epoch's permutation cut into batches."""
    n = len(tensors[0])
    order = epoch_permutation(n, seed, epoch) if shuffle else torch.arange(n)
    return [tuple(t[order[i:i + batch_size]] for t in tensors) for i in range(0, n, batch_size)]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n, batch_size", [(10, 3), (64, 16), (5, 8)])
def test_tensor_loader_batches_are_the_permutation_cut_in_order(shuffle: bool, n: int, batch_size: int) -> None:
    data = (torch.randn(n, 3), torch.arange(n))
    loader = TensorLoader(data, batch_size, shuffle=shuffle, seed=4)
    for epoch in range(2):
        loader.set_epoch(epoch)
        got = list(loader)
        expected = reference_batches(data, batch_size, 4, epoch, shuffle)
        assert len(got) == len(expected)
        for batch, reference in zip(got, expected):
            assert all(torch.equal(a, b) for a, b in zip(batch, reference))


def test_tensor_loader_resumes_mid_epoch_and_then_starts_epochs_from_the_top() -> None:
    data = (torch.randn(20, 2), torch.arange(20))
    loader = TensorLoader(data, 6, seed=1)
    loader.set_epoch(3, start_batch=2)
    resumed = [y for _, y in loader]
    full = reference_batches(data, 6, 1, 3, True)
    assert [b.tolist() for b in resumed] == [b[1].tolist() for b in full[2:]]
    loader.set_epoch(4)
    assert len(list(loader)) == len(full)


def test_unshuffled_batches_are_views_not_copies() -> None:
    x = torch.randn(12, 3)
    first, _ = next(iter(TensorLoader((x, torch.arange(12)), 4, shuffle=False)))
    assert first.data_ptr() == x.data_ptr()


def test_cpu_data_always_fits_and_stays_put() -> None:
    data = (torch.randn(8, 2), torch.arange(8))
    assert fits_on_device(data, torch.device("cpu"))
    loader = TensorLoader(data, 4).to("cpu")
    assert loader.copy_to is None
    assert loader.tensors[0].data_ptr() == data[0].data_ptr()


def test_generic_datasets_get_pinned_batches_only_when_asked() -> None:
    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            return torch.zeros(2), i

    assert make_loader(Items(), 2, pin_memory=True).pin_memory
    assert not make_loader(Items(), 2).pin_memory
    given = DataLoader(TensorDataset(torch.zeros(4, 2), torch.zeros(4)), batch_size=2)
    assert make_loader(given, 2, pin_memory=True) is given  # the user's own loader is used as given


def test_epoch_totals_add_in_place_and_match_a_plain_sum() -> None:
    totals = EpochTotals("cpu", [Accuracy()])
    running = totals.loss_sum
    losses, sizes, correct = [0.5, 1.25, 2.0], [4, 4, 2], 0
    for loss, n in zip(losses, sizes):
        outputs, targets = torch.randn(n, 3), torch.randint(0, 3, (n,))
        correct += int((outputs.argmax(1) == targets).sum())
        totals.record(torch.tensor(loss), outputs, targets)
    assert totals.loss_sum is running  # no new tensor per batch
    assert float(totals.loss_sum) == pytest.approx(sum(loss * n for loss, n in zip(losses, sizes)))
    assert totals.count == 10
    assert totals.metrics[0].compute() == pytest.approx(correct / 10)


def test_accuracy_keeps_its_sums_in_place_on_the_outputs_device() -> None:
    metric = Accuracy()
    correct = metric.correct
    metric.update(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    metric.update(torch.tensor([[0.3, 0.7]]), torch.tensor([1]))
    assert metric.correct is correct
    assert metric.compute() == pytest.approx(2 / 3)


# ---- the compact CNN and the fast recipes ---------------------------------------------------

def test_compact_cnn_shapes_and_options() -> None:
    model = build_model({"name": "compact_cnn", "channels": [4, 8], "hidden": 16})
    assert model(images(3)[0]).shape == (3, 10)
    model = build_model({"name": "compact_cnn", "in_channels": 3, "image_size": 32})
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="two channel counts"):
        build_model({"name": "compact_cnn", "channels": [4, 8, 16]})


@pytest.mark.parametrize("recipe", ["mnist-fast", "mnist-mlp-fast"])
def test_fast_recipes_resolve_with_their_speed_options(recipe: str) -> None:
    config = zerograd.config.resolve(recipe)
    assert config["schedule"]["name"] == "onecycle"
    assert config["eval_batch_size"] == 10000
    assert config["threads"] is None  # chosen per machine and model, not pinned in the recipe


FAST_BARS = {"mnist-fast": 0.99, "mnist-mlp-fast": 0.968}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(FAST_BARS))
def test_fast_recipe_reaches_its_accuracy_bar(recipe: str, tmp_path: Path) -> None:
    run = zerograd.train(recipe, out=tmp_path / recipe, quiet=True)
    accuracy = run.summary["final"]["test_accuracy"]
    assert accuracy >= FAST_BARS[recipe], f"{recipe}: test accuracy {accuracy:.4f} < {FAST_BARS[recipe]}"


# ---- the lean fused optimizers --------------------------------------------------------------

OPTIMIZER_PAIRS = {
    "adam": (lambda p: torch.optim.Adam(p, lr=0.01, fused=True), lambda p: fused.Adam(p, lr=0.01, fused=True)),
    "adam-l2": (lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1, fused=True),
                lambda p: fused.Adam(p, lr=0.01, weight_decay=0.1, fused=True)),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01, fused=True), lambda p: fused.AdamW(p, lr=0.01, fused=True)),
    "sgd-momentum": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, fused=True),
                     lambda p: fused.SGD(p, lr=0.05, momentum=0.9, fused=True)),
    "sgd-nesterov-l2": (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3,
                                                  fused=True),
                        lambda p: fused.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, fused=True)),
    "sgd-plain": (lambda p: torch.optim.SGD(p, lr=0.05, fused=True), lambda p: fused.SGD(p, lr=0.05, fused=True)),
    "adam-amsgrad (torch's path)": (lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, fused=True),
                                    lambda p: fused.Adam(p, lr=0.01, amsgrad=True, fused=True)),
    "adam-foreach (torch's path)": (lambda p: torch.optim.Adam(p, lr=0.01, foreach=True),
                                    lambda p: fused.Adam(p, lr=0.01, foreach=True)),
}


def train_pair(make_reference, make_lean, steps: int = 12, one_cycle: bool = True):
    torch.manual_seed(0)
    reference_model = mlp([20, 16, 16, 4], flatten=False)
    lean_model = mlp([20, 16, 16, 4], flatten=False)
    lean_model.load_state_dict(reference_model.state_dict())
    pairs = [(reference_model, make_reference(reference_model.parameters())),
             (lean_model, make_lean(lean_model.parameters()))]
    schedules = [torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps) for _,
                 opt in pairs] if one_cycle else []
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 20, generator=generator), torch.randint(0, 4, (8,), generator=generator)
        for model, optimizer in pairs:
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        for schedule in schedules:
            schedule.step()
    return pairs


@pytest.mark.parametrize("name", list(OPTIMIZER_PAIRS))
def test_lean_optimizers_update_bitwise_like_torch(name: str) -> None:
    (reference, reference_opt), (lean, lean_opt) = train_pair(*OPTIMIZER_PAIRS[name])
    assert all(torch.equal(p, q) for p, q in zip(reference.parameters(), lean.parameters()))
    reference_state, lean_state = reference_opt.state_dict()["state"], lean_opt.state_dict()["state"]
    assert reference_state.keys() == lean_state.keys()
    for index, entries in reference_state.items():
        assert entries.keys() == lean_state[index].keys()
        assert all(torch.equal(v, lean_state[index][k]) for k, v in entries.items())


def test_lean_optimizer_state_dict_loads_into_torchs_and_back() -> None:
    (_, reference_opt), (lean, lean_opt) = train_pair(*OPTIMIZER_PAIRS["adam"], one_cycle=False)
    restored = fused.Adam(lean.parameters(), lr=0.01, fused=True)
    restored.load_state_dict(reference_opt.state_dict())
    lean.zero_grad()
    lean(torch.randn(2, 20)).sum().backward()
    before = [p.clone() for p in lean.parameters()]
    restored.step()  # the short path, on state that came from torch's Adam
    assert any(not torch.equal(a, b) for a, b in zip(before, lean.parameters()))
    assert isinstance(lean_opt, torch.optim.Adam)


def test_lean_optimizer_runs_step_hooks_and_shows_in_the_profiler() -> None:
    p = nn.Parameter(torch.randn(3))
    optimizer = fused.Adam([p], lr=0.1, fused=True)
    calls: list[str] = []
    optimizer.register_step_pre_hook(lambda *_: calls.append("pre"))
    optimizer.register_step_post_hook(lambda *_: calls.append("post"))
    for _ in range(2):
        optimizer.zero_grad()
        (p ** 2).sum().backward()
        optimizer.step()
    assert calls == ["pre", "post", "pre", "post"]
    with torch.profiler.profile() as profiler:
        optimizer.zero_grad()
        (p ** 2).sum().backward()
        optimizer.step()
    names = {event.name for event in profiler.events()}
    assert "Optimizer.step#Adam.step" in names and "Optimizer.zero_grad#Adam.zero_grad" in names


def test_lean_optimizer_takes_a_closure_and_zeroes_without_dropping_grads_when_asked() -> None:
    p = nn.Parameter(torch.ones(2))
    optimizer = fused.SGD([p], lr=0.1, momentum=0.9, fused=True)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    assert float(optimizer.step(closure).detach()) == pytest.approx(2.0)
    optimizer.zero_grad(set_to_none=False)
    assert p.grad is not None and not p.grad.any()
    optimizer.zero_grad()
    assert p.grad is None


def test_build_optimizer_gives_the_lean_classes_for_fused_names() -> None:
    from zerograd.optim import build_optimizer

    params = [nn.Parameter(torch.zeros(2))]
    assert type(build_optimizer(params, "adam", lr=0.1, device=torch.device("cpu"))) is fused.Adam
    assert type(build_optimizer(params, "adamw", lr=0.1, device=torch.device("cpu"))) is fused.AdamW
    assert type(build_optimizer(params, "sgd", lr=0.1, device=torch.device("cpu"))) is fused.SGD
