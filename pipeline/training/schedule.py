"""Training phases: which blocks are trainable, at which learning rate, for how many epochs.

Training from scratch is one phase. Transfer learning starts with the base frozen and unfreezes
it step by step, either by a manual list of phases or automatically: train until validation
loss has not improved for `patience` epochs, then unfreeze the next block at a lower learning
rate, until every block is unfrozen and validation loss stalls once more, or `train.epochs`
epochs are done. Each decision is returned with its reason, to be printed and logged.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.common.files import read_json, write_json
from pipeline.params import TrainParams


@dataclass(frozen=True)
class Phase:
    index: int
    unfrozen: int | None  # blocks of the base trainable from its top; None: no base (scratch)
    learning_rate: float
    first_epoch: int  # epochs done before the phase (Keras' initial_epoch)
    last_epoch: int  # epochs done when the phase has run in full (Keras' epochs)
    patience: int  # epochs without a better monitored value before the phase ends early


def first_phase(cfg: TrainParams, blocks: int, epochs: int) -> Phase:
    """The first phase of `epochs` in all (train.epochs, resolved)."""
    transfer = cfg.transfer
    if transfer.base == "none":
        learning_rate, patience = cfg.optimizer.learning_rate, cfg.early_stopping.patience
        return Phase(0, None, learning_rate, 0, epochs, patience)
    if transfer.schedule == "manual":
        return _manual_phase(cfg, 0, 0, blocks, epochs)
    # the automatic schedule: every block frozen, one more unfrozen at each stall
    return Phase(0, 0, cfg.optimizer.learning_rate, 0, epochs, transfer.patience)


def _manual_phase(cfg: TrainParams, index: int, start: int, blocks: int, epochs: int) -> Phase:
    planned = cfg.transfer.phases[index]
    if planned.unfreeze > blocks:
        raise ValueError(
            f"train.transfer.phases[{index}].unfreeze = {planned.unfreeze}, but the base "
            f"{cfg.transfer.base} has {blocks} blocks"
        )
    end = min(start + planned.epochs, epochs)
    patience = cfg.early_stopping.patience
    return Phase(index, planned.unfreeze, planned.learning_rate, start, end, patience)


def next_phase(
    cfg: TrainParams, phase: Phase, epochs_done: int, stalled: bool, blocks: int, epochs: int
) -> tuple[Phase | None, str]:
    """The phase after `phase`, which ended after `epochs_done` epochs in all (`stalled`: its
    monitored value stopped improving), and the reason for the choice."""
    if cfg.transfer.base == "none":
        return None, "done: training from scratch is one phase"
    if epochs_done >= epochs:
        return None, f"stop: train.epochs = {epochs} epochs reached"
    if cfg.transfer.schedule == "manual":
        if phase.index + 1 == len(cfg.transfer.phases):
            return None, "stop: last manual phase done"
        following = _manual_phase(cfg, phase.index + 1, epochs_done, blocks, epochs)
        return following, (
            f"next: manual phase {following.index + 1}, {following.unfrozen} of {blocks} "
            f"blocks unfrozen at learning rate {following.learning_rate:g}"
        )
    if phase.unfrozen == blocks:
        return None, f"stop: all {blocks} blocks unfrozen and val_loss stalled"
    rate = phase.learning_rate * cfg.transfer.learning_rate_factor
    following = Phase(
        phase.index + 1, phase.unfrozen + 1, rate, epochs_done, epochs, phase.patience
    )
    return following, (
        f"next: val_loss stalled for {phase.patience} epochs; unfreeze block "
        f"{blocks - phase.unfrozen} of {blocks} (counted from the input), learning rate {rate:g}"
    )


@dataclass
class ScheduleState:
    """Where the schedule is: the current phase and a row for each finished one. Saved in the
    resume folder after every transition, so a killed run resumes inside the right phase."""

    phase: Phase
    rows: list[dict]

    def save(self, path: Path) -> None:
        write_json(path, {"phase": asdict(self.phase), "rows": self.rows})

    @classmethod
    def load(cls, path: Path) -> "ScheduleState | None":
        if not path.exists():
            return None
        state = read_json(path)
        return cls(Phase(**state["phase"]), state["rows"])
