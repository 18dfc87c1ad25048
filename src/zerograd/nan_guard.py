"""Training that fails without a word: a loss that becomes NaN/Inf, a loss that explodes while
staying finite, an epoch whose batches were nearly all left out.

`NonFiniteGuard` watches the loss while training: `on_nan: error` stops with a `TrainingError`
naming the epoch and step, the last good checkpoint and the likely causes; `on_nan: skip` drops
the batch (no optimizer step) and counts it, warns when an epoch left out a noticeable share of
its batches and stops the run once more than half of an epoch's batches had to be left out.

A learning rate far too high can also drive the loss to 1e26 without it ever becoming NaN/Inf; the
run would finish at chance accuracy and exit 0. `LossWatch` compares the training loss per sample,
averaged over a window of batches, with where the run started: the loss per sample of its first
batch, the only one computed before any optimizer step (with lr 1e6 the second batch has blown up
already). Above `GROWTH` times that start, the run has diverged, in both modes. The rule has no
false alarms on a run that learns, even one whose loss starts high and falls (a summed loss, the
sinc and linear recipes): a loss only exceeds 10,000 times its untrained value by blowing up. A
start below `FLOOR` (a loss of about 0) counts as `FLOOR`, and a first batch of fewer than
`REFERENCE_SAMPLES` samples gets a bar `SMALL_START_MARGIN` times higher: one sample that the
untrained model happens to fit would otherwise set the bar near 0. Looking costs one host sync per
window (`check_every` batches) and one at the end of each epoch, never one per batch. Under DDP it
looks only at the end of an epoch, on the losses of all ranks (one small all-reduce), so every rank
reaches the same verdict at the same step.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from zerograd.accelerator import Accelerator
from zerograd.errors import TrainingError, ZerogradWarning
from zerograd.state import EpochTotals, LoopState

SKIPPED_WARN = 0.05  # on_nan: skip warns when an epoch left out at least this fraction of its batches
GROWTH = 1e4  # how many times its start the loss per sample may grow before the run counts as diverged
FLOOR = 1e-3  # a start below this (a loss of about 0) counts as this
REFERENCE_SAMPLES = 8  # a first batch smaller than this is a noisy start ...
SMALL_START_MARGIN = 100.0  # ... so its bar is this many times higher

# ----------------------------------------------------------------------------------------------
# A loss that explodes while staying finite

@dataclass
class Explosion:
    """A window of batches whose loss per sample grew over GROWTH times the run's start."""

    loss: float  # the window's mean loss per sample
    start: float  # the run's starting loss per sample
    first_batch: int  # the window, 0-based batch indices within its epoch
    last_batch: int


class LossWatch:
    """Looks at the epoch's running loss sums (`totals`) every `check_every` batches and at the
    end of each epoch; `look` returns an `Explosion` when the loss has blown up."""

    def __init__(self, acc: Accelerator, totals: EpochTotals, *, check_every: int = 64) -> None:
        self.acc = acc
        self.totals = totals
        self.check_every = check_every
        self._start: torch.Tensor | None = None  # the loss per sample of the first batch, on the device
        self._start_samples = 0
        self._base: tuple[int, float, int, int] = (-1, 0.0, 0, 0)  # (epoch, loss sum, count, batch) at the last look
        self._since = 0

    def due(self) -> bool:
        """Called before each batch is recorded: notes the start after the first batch (no sync);
        True every `check_every` batches, when it is time to `look` (never under DDP, which looks
        only at the end of an epoch, on every rank at once)."""
        self._note_start()
        self._since += 1
        return self._since >= self.check_every and not self.acc.distributed

    def _note_start(self) -> None:
        """The loss per sample of the run's first recorded batch (a device-side copy: no sync)."""
        totals = self.totals
        if self._start is None and totals.count:
            self._start = (totals.loss_sum.detach().float() / totals.count).clone()
            self._start_samples = totals.count

    def look(self, state: LoopState) -> Explosion | None:
        """The window since the last look (a host sync); at the end of an epoch the caller looks too."""
        self._since = 0
        totals = self.totals
        base_epoch, base_sum, base_count, base_batch = self._base
        if base_epoch != state.epoch:  # a new epoch's running sums
            base_sum, base_count, base_batch = 0.0, 0, 0
        self._note_start()
        start_now = self._start if self._start is not None else torch.full((), math.nan, device=totals.loss_sum.device)
        loss_sum, start = torch.stack((totals.loss_sum.detach().float(), start_now)).tolist()
        self._base = (state.epoch, loss_sum, totals.count, state.batch)
        window_sum, window_count = loss_sum - base_sum, float(totals.count - base_count)
        if self.acc.distributed:  # every rank decides on the same numbers (and every rank joins the all-reduce)
            known = math.isfinite(start)
            summed = self.acc.all_reduce_sum(torch.tensor(
                [window_sum, window_count, start if known else 0.0, float(known), self._start_samples],
                dtype=torch.float64, device=self.acc.device)).tolist()
            window_sum, window_count = summed[0], summed[1]
            start = summed[2] / summed[3] if summed[3] else math.nan
            samples = int(summed[4])
        else:
            samples = self._start_samples
        if window_count <= 0 or not math.isfinite(start):  # no start yet, or a NaN one: the NaN guard's business
            return None
        loss = window_sum / window_count
        bar = GROWTH * max(start, FLOOR) * (SMALL_START_MARGIN if samples < REFERENCE_SAMPLES else 1.0)
        if not loss > bar:  # a NaN window is the NaN guard's business too
            return None
        return Explosion(loss, start, base_batch, max(base_batch, state.batch - 1))


# ----------------------------------------------------------------------------------------------
# NaN / Inf, and skipped batches

class NonFiniteGuard:
    """What the loop does when the loss is NaN/Inf: policy "error" raises a `TrainingError`,
    "skip" leaves the batch out (no optimizer step) and counts it in `skipped_batches`; once more
    than half of an epoch's batches are left out, the run has diverged and stops. In both modes a
    `LossWatch` stops a run whose loss explodes without becoming NaN/Inf.

    Asking whether a loss is finite is a host sync. On the CPU it costs about nothing and is done
    every batch; on an accelerator "error" records the answer on the device and looks at it every
    `check_every` batches, at the end of the epoch and before every checkpoint (so no checkpoint
    ever holds NaN weights), still naming the exact batch. "skip" must know before the backward
    pass, so it syncs every batch."""

    def __init__(self, policy: str, acc: Accelerator, totals: EpochTotals, *, check_every: int = 64,
                 every_batch: bool | None = None) -> None:
        self.policy = policy
        self.acc = acc
        self.every_batch = policy == "skip" or (acc.device.type == "cpu" if every_batch is None else every_batch)
        self.check_every = check_every
        self.watch = LossWatch(acc, totals, check_every=check_every)
        self.skipped = 0  # batches this epoch left out (on_nan: skip)
        self._flags: torch.Tensor | None = None
        self._where: list[tuple[int, int, int]] = []  # (epoch, batch index, step) of each pending flag

    def start_epoch(self) -> None:
        self.skipped = 0

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = state["skipped"]

    def loss_usable(self, loss: torch.Tensor, state: LoopState, index: int) -> bool:
        """True when the batch may be trained on; raises in "error" mode once a NaN/Inf is seen."""
        if self.watch.due():
            self.verify(state)
        value = loss.detach()
        if self.policy == "skip":
            # all ranks skip together, or DDP's all-reduce of the gradients would hang
            if not self.acc.any_rank(~torch.isfinite(value).all()):
                return True
            self._skip(state, index)
            return False
        if self.every_batch:  # .item() of a CPU scalar: well under a microsecond
            if not (math.isfinite(value.item()) if value.numel() == 1 else bool(torch.isfinite(value).all())):
                raise divergence_error(state, "the loss", _kind(value), epoch=state.epoch, index=index,
                                       step=state.global_step)
            return True
        finite = torch.isfinite(value).all()
        if self._flags is None:
            self._flags = torch.zeros(self.check_every, dtype=torch.bool, device=loss.device)
        self._flags[len(self._where)] = ~finite  # a device-side copy: no sync
        self._where.append((state.epoch, index, state.global_step))
        if len(self._where) == self.check_every:
            self.verify(state)
        return True

    def gradients_usable(self, optimizer: torch.optim.Optimizer, state: LoopState) -> bool:
        """In "skip" mode, a step whose gradients hold NaN/Inf is skipped too (with a gradient
        scaler the scaler already does that)."""
        if self.policy != "skip" or self.acc.scaler is not None:
            return True
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            return True
        optimizer.zero_grad(set_to_none=True)
        self._skip(state, state.batch)
        return False

    def _skip(self, state: LoopState, index: int) -> None:
        """Count a left-out batch; once more than half the epoch's are, it cannot train on most of
        its data and the run has diverged (every rank counts the same, so all stop together)."""
        self.skipped += 1
        batches = state.batches_per_epoch
        if batches and 2 * self.skipped > batches:
            every = self.skipped >= batches
            raise divergence_error(
                state, "the loss of every batch" if every else f"the loss (or gradients) of {self.skipped:,} of the "
                f"epoch's {batches:,} batches, more than half,", "NaN/Inf", index=index, skipping=True)

    def verify(self, state: LoopState) -> None:
        """Look at the deferred checks now (a sync): raise for the first NaN/Inf batch, then for a
        loss that exploded (not under DDP, where only the epoch's end looks: on every rank at once)."""
        pending, self._where = self._where, []
        if pending and self._flags is not None:
            flags = self._flags[:len(pending)]
            if bool(flags.any()):
                epoch, index, step = pending[int(flags.nonzero()[0][0])]
                raise divergence_error(state, "the loss", "NaN/Inf", epoch=epoch, index=index, step=step)
        if not self.acc.distributed:
            self._look(state)

    def check_epoch(self, state: LoopState) -> None:
        """At the end of an epoch: pending checks and the loss, the weights (NaN gradients leave the
        loss finite until the next batch; the epoch's last one has none; in "skip" mode a finite step
        can still overflow them), and how many batches were skipped."""
        self.verify(state)
        if self.acc.distributed:
            self._look(state)
        check_finite_weights(state)
        batches, skipped = state.batches_per_epoch, self.skipped
        if self.policy == "skip" and batches and skipped >= max(1.0, SKIPPED_WARN * batches) and self.acc.is_main:
            warnings.warn(f"epoch {state.epoch + 1}: on_nan: skip left out {skipped:,} of {batches:,} batches "
                          f"({skipped / batches:.0%}) for a NaN/Inf loss or gradients; the epoch trained on the rest "
                          "only. "
                          f"Check the inputs for NaN/Inf, or lower the lr (lr {state.options.lr:g})",
                          ZerogradWarning, stacklevel=2)

    def _look(self, state: LoopState) -> None:
        explosion = self.watch.look(state)
        if explosion is not None:
            raise explosion_error(state, explosion)


def check_finite_weights(state: LoopState) -> None:
    """Refuse to go on with NaN/Inf weights (e.g. after NaN gradients with a finite loss)."""
    params = [p for p in state.raw_model.parameters() if p.is_floating_point()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        finished_epoch = state.epoch - 1 if state.batch == 0 and state.epoch > 0 else state.epoch
        raise divergence_error(state, "the weights", "NaN/Inf", epoch=finished_epoch)


def divergence_error(state: LoopState, what: str, kind: str, *, epoch: int | None = None, index: int | None = None,
                     step: int | None = None, skipping: bool = False) -> TrainingError:
    """The error for a run whose loss or weights became NaN/Inf: where, what to resume from, why."""
    epoch = state.epoch if epoch is None else epoch
    step = state.global_step if step is None else step
    batch = f", batch {index + 1}" if index is not None else ""
    where = f"epoch {epoch + 1}{batch} (after {step} optimizer steps)"
    if skipping:
        action = "Skipping batches cannot help when most batches fail."
    elif state.options.on_nan == "skip":
        action = "Skipping batches cannot help once the weights themselves are NaN/Inf."
    else:
        action = "To leave such batches out instead, set on_nan: skip."
    return TrainingError(f"training diverged: {what} became {kind} at {where}; {_last_good(state)}. "
                         f"Likely causes: {_causes(state)}. {action}")


def explosion_error(state: LoopState, explosion: Explosion) -> TrainingError:
    """The error for a loss that blew up by orders of magnitude while staying finite."""
    batches = (f"batch {explosion.first_batch + 1}" if explosion.first_batch == explosion.last_batch
               else f"batches {explosion.first_batch + 1}-{explosion.last_batch + 1}")
    # The loss is looked at every few batches: the newest checkpoint may date from within the blow-up.
    last = (f"the newest checkpoint, written before this was seen, is {state.last_checkpoint}" if state.last_checkpoint
            else "no checkpoint was written before it")
    return TrainingError(
        f"training diverged: the loss became {explosion.loss:.3g} per sample, over {GROWTH:,.0f} times its start "
        f"({explosion.start:.3g}), in epoch {state.epoch + 1}, {batches} (after {state.global_step} optimizer steps); "
        f"{last}. Likely causes: {_causes(state)}. The loss is still finite, so on_nan: skip would not leave these "
        "batches out."
    )


def _last_good(state: LoopState) -> str:
    return (f"the last good checkpoint is {state.last_checkpoint}" if state.last_checkpoint
            else "no checkpoint was written before it")


def _causes(state: LoopState) -> str:
    lr = state.options.lr
    return (f"a learning rate too high for this model (lr {lr:g}: try {lr / 10:g}, or clip_grad_norm: 1.0), "
            "NaN/Inf or unscaled values in the inputs (normalize them), or a log or division of zero in the model")


def _kind(value: torch.Tensor) -> str:
    return "NaN" if bool(torch.isnan(value).any()) else "Inf"
