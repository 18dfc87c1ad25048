"""Progress on the terminal: a header saying what trains where, and one line per epoch."""
from __future__ import annotations

from rich.console import Console

from zerograd.callbacks import Callback
from zerograd.engine import LoopState
from zerograd.models import count_parameters


def format_logs(logs: dict[str, float]) -> str:
    """`epoch 2/3  train_loss 0.412  test_accuracy 0.853  (4.1 s)` from an epoch record."""
    parts = []
    for key, value in logs.items():
        if key in ("epoch", "seconds"):
            continue
        parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


class EpochPrinter(Callback):
    """Prints what is trained on which device, then one compact line per finished epoch."""

    def __init__(self, console: Console | None = None, *, title: str = "") -> None:
        self.console = console or Console(highlight=False)
        self.title = title

    def on_fit_start(self, state: LoopState) -> None:
        if not state.accelerator.is_main:
            return
        acc = state.accelerator
        where = f"{acc.device}" + (f" x{acc.world_size} processes" if acc.distributed else "")
        self.console.print(
            f"[bold]{self.title or 'training'}[/]: {count_parameters(state.raw_model):,} parameters on {where}, "
            f"precision {acc.precision}, {state.options.epochs} epochs of {state.batches_per_epoch} batches"
        )

    def on_epoch_end(self, state: LoopState, logs: dict[str, float]) -> None:
        epochs = state.options.epochs
        every = max(1, epochs // 10) if epochs > 20 else 1  # long runs: about ten lines, not hundreds
        epoch = int(logs["epoch"])
        if state.accelerator.is_main and (epoch % every == 0 or epoch in (1, epochs)):
            self.console.print(f"epoch {epoch}/{epochs}  {format_logs(logs)}  ({logs['seconds']:.1f} s)")
