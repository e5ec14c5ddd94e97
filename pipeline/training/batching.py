"""`batch_size: auto`, the rule training (`training.settings`) and the audit's fold models
share; part of the resolver, kept apart so that the audit imports nothing else of training.

About AUTO_STEPS steps an epoch, as a power of two, and never below AUTO_MIN_BATCH: on a CPU a
step costs a fixed overhead besides its arithmetic, so a large training set takes large
batches; a small one keeps enough steps to learn from.
"""

import math

from pipeline.params import AUTO

AUTO_STEPS = 400  # batch_size auto: about this many steps an epoch
AUTO_MIN_BATCH = 20  # batch_size auto: never fewer images a step (the seed article's batch)


def resolve_batch_size(setting: int | str, train_images: int) -> int:
    """A batch size for a training set of `train_images` images (module docstring)."""
    if setting != AUTO:
        return int(setting)
    wanted = max(train_images / AUTO_STEPS, 1.0)
    return max(AUTO_MIN_BATCH, 2 ** round(math.log2(wanted)))
