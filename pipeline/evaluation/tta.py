"""Test-time augmentation reported beside the headline (`evaluate.tta`): the deployed model's
probabilities (with its own `train.test_time_views`) averaged over further views of each test
image, the views of `serving.views`.
"""

import numpy as np
import pandas as pd

from pipeline.imagedata.dataset import image_dataset
from pipeline.paths import SPLIT_DIR
from pipeline.serving.inference import Classifier
from pipeline.serving.views import views


def predict_tta(
    classifier: Classifier, rows: pd.DataFrame, batch_size: int, kind: str, root=SPLIT_DIR
) -> np.ndarray:
    """Probabilities for manifest `rows`, each the mean over the views of `kind`."""
    # decoded once: the in-memory cache is shared by every view's dataset made from it
    data = image_dataset(
        rows,
        classifier.classes,
        classifier.image_size,
        classifier.channels,
        batch_size,
        root=root,
        cache="memory",
    )
    every = views(kind)
    viewed = [data.map(lambda x, y, view=view: (view(x), y)) for view in every]
    return sum(classifier.predictor.predict(batches, verbose=0) for batches in viewed) / len(every)
