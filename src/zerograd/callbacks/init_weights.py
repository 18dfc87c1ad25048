"""`init: RUN_DIR | FILE`: a run starts from weights trained before (see `zerograd.transfer`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from zerograd.callbacks.base import Callback
from zerograd.state import LoopState
from zerograd.transfer import init_from


class InitFrom(Callback):
    """Loads the weights `source` names into the model by name when `fit` starts (a warning says
    what did not fit: a new head, say). A run resumed from a checkpoint has its weights already:
    it runs after `ResumeFrom` (order -90 after -100) and then reads nothing, so a resumed run
    does not need the file any more. `record` is what summary.json says of it (kept in
    checkpoints)."""

    order: ClassVar[int] = -90

    def __init__(self, source: str | Path) -> None:
        self.source = source
        self.record: dict[str, Any] | None = None

    def on_fit_start(self, state: LoopState) -> None:
        if self.record is not None or state.last_checkpoint is not None:
            return
        self.record = init_from(state.raw_model, self.source).to_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"record": self.record}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.record = state.get("record")
