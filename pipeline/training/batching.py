"""`batch_size: auto`, the rule training and the audit's fold models share.

About AUTO_STEPS steps an epoch, as a power of two, and never below AUTO_MIN_BATCH. On a CPU a
step costs a fixed overhead besides its arithmetic (a batch of 128 ran 2.5 times the images per
second of 20 on the default CNN), so a large training set takes large batches; a small one
keeps enough steps to learn from (the digits stay at 20).
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
