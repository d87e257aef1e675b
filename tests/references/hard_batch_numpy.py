"""NumPy port of the official hard mini-batch selection loop.

Source: https://github.com/imjohnzakkam/DyBAT `run.py`, function
`turbo_train`, commit a0d7b25155c9ab0c59c5c39f7b0b625016fd4efe (the
selection logic is unchanged since the first commit 402a3b5). The official
loop, without its model, data loader and logging:

- one epoch over batches 0..b-1, storing `(i, loss_i)` at list index i;
- then repeatedly: sort the list by loss, descending (Python's stable
  `sorted(..., reverse=True)`, applied to the list as last sorted), take
  the ids of the first `int(delta * b)` entries, visit them in increasing
  id order, train each and overwrite its entry (found at its index in the
  sorted list) with the new loss;
- stop before the step that would exceed `epochs * b` steps.

`loss_of(step, batch_id)` stands for the training step: it returns the
pre-update loss the official code reads with `loss.item()`. The `variant`
switches exist only to prove the tests sensitive: each is a mistake a port
can make.
"""

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "ascending",  # easiest batches first
    "refresh_all",  # re-evaluate every batch's loss each round
    "no_stale_order",  # sort the id-ordered list each round (ties differ)
    "selection_order",  # train in loss order, not id order
)


def hard_batch_selection(loss_of, num_batches, delta, epochs, variant=CORRECT):
    """Returns the batch id of every step of a run of `epochs * b` steps."""
    b = num_batches
    k = int(delta * b)
    entries = [(0, 0.0)] * b
    steps = []
    for i in range(b):
        entries[i] = (i, loss_of(len(steps), i))
        steps.append(i)
    while len(steps) < epochs * b:
        if variant == "no_stale_order":
            entries = sorted(entries, key=lambda e: e[0])
        if variant == "refresh_all":
            entries = [(i, loss_of(len(steps), i)) for i, _ in entries]
        entries = sorted(
            entries, key=lambda e: e[1], reverse=(variant != "ascending")
        )
        ids = [e[0] for e in entries]
        chosen = [e[0] for e in entries[:k]]
        if variant != "selection_order":
            chosen = sorted(chosen)
        for batch in chosen:
            if len(steps) + 1 > epochs * b:
                break
            entries[ids.index(batch)] = (batch, loss_of(len(steps), batch))
            steps.append(batch)
    return steps
