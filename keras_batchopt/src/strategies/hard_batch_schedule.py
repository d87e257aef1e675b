"""The bookkeeping of hard mini-batch selection (no Keras, no data).

`HardBatchSchedule` decides which fixed mini-batch each training step uses
and records the loss each step measured, following `turbo_train` of the
official code (https://github.com/imjohnzakkam/DyBAT, `run.py`, commit
a0d7b25155c9ab0c59c5c39f7b0b625016fd4efe):

- Warm-up: `warmup_epochs` passes over batches `0, ..., b - 1` in order,
  each recording its loss.
- Then rounds: sort the batches by recorded loss, highest first (a stable
  sort of the previous round's order, as Python's `sorted(...,
  reverse=True)` on the official list), take the first `k = floor(delta *
  b)`, and train them in increasing batch order, recording each one's new
  loss. Batches left out keep their old (stale) loss.
"""

import math


class HardBatchSchedule:
    """Which batch each step trains on, and the losses that decide it.

    Steps are *decided* (a batch id handed to the input pipeline) and later
    *recorded* (the loss measured on it), in the same order. A round is
    only chosen when every earlier step is recorded, unless `stale_ok`, in
    which case the losses known so far are used.
    """

    def __init__(self, num_batches, delta, warmup_epochs):
        self.num_batches = num_batches
        self.num_selected = math.floor(delta * num_batches)
        self.warmup_steps = warmup_epochs * num_batches
        self.losses = [0.0] * num_batches
        # The official list order: batch ids, as last sorted.
        self.order = list(range(num_batches))
        self.round = []
        self.round_position = 0
        self.recorded = 0
        self.decided = 0
        # (batch id, state before the decision) of decided, unrecorded steps.
        self.pending = []
        self.stale_rounds = 0

    # ------------------------------------------------------------ deciding

    def _snapshot(self):
        return (self.order, self.round, self.round_position, self.decided)

    def next_batch(self, stale_ok=False):
        """Decides the next step's batch id; returns it, or `None` when a
        new round needs losses not yet recorded (and not `stale_ok`)."""
        before = self._snapshot()
        if self.decided < self.warmup_steps:
            batch = self.decided % self.num_batches
        else:
            if self.round_position == len(self.round):
                if self.recorded < self.decided:
                    if not stale_ok:
                        return None
                    self.stale_rounds += 1
                self._new_round()
            batch = self.round[self.round_position]
            self.round_position += 1
        self.decided += 1
        self.pending.append((batch, before))
        return batch

    def _new_round(self):
        losses = self.losses
        self.order = sorted(self.order, key=lambda i: losses[i], reverse=True)
        self.round = sorted(self.order[: self.num_selected])
        self.round_position = 0

    # ----------------------------------------------------------- recording

    def record(self, loss):
        """Records the loss of the oldest decided, unrecorded step; returns
        its batch id."""
        if not self.pending:
            raise ValueError(
                "A loss was recorded for a step whose batch the dataset did "
                "not produce: pass the same HardBatchDataset to `fit` and "
                "to HardBatchSelection."
            )
        batch, _ = self.pending.pop(0)
        self.losses[batch] = float(loss)
        self.recorded += 1
        return batch

    def discard_pending(self):
        """Forgets decided steps that were never trained on (an abandoned
        input iterator): the next decision is made again from the state of
        the oldest one."""
        if self.pending:
            order, rnd, position, decided = self.pending[0][1]
            self.order, self.round = order, rnd
            self.round_position, self.decided = position, decided
            self.pending = []

    # --------------------------------------------------------------- state

    def get_state(self):
        """The recorded state as plain Python values (JSON-serializable)."""
        self.discard_pending()
        return {
            "num_batches": self.num_batches,
            "losses": list(self.losses),
            "order": list(self.order),
            "round": list(self.round),
            "round_position": self.round_position,
            "steps": self.recorded,
        }

    def set_state(self, state):
        if state["num_batches"] != self.num_batches:
            raise ValueError(
                "The saved hard-batch state has "
                f"{state['num_batches']} batches and this dataset "
                f"{self.num_batches}. Received: state={state!r:.200}"
            )
        self.losses = [float(v) for v in state["losses"]]
        self.order = [int(i) for i in state["order"]]
        self.round = [int(i) for i in state["round"]]
        self.round_position = int(state["round_position"])
        self.recorded = self.decided = int(state["steps"])
        self.pending = []
