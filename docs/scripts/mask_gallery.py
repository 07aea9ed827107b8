"""Draw what each dropkit dropout layer does to a real image: the pictures of the tutorial.

Run from the repository root::

    python docs/scripts/mask_gallery.py            # writes docs/img/masks/*.png

The image is the public-domain portrait of Grace Hopper (US Navy photograph) that ships with
matplotlib as sample data, so nothing is downloaded. Every picture is the output of a dropkit
``torch`` layer in training mode, seeded, so reruns give the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from matplotlib import cbook
from matplotlib.figure import Figure
from PIL import Image

import dropkit.nn as dkn

SIZE = 96  # pixels per side of the grey image
SEED = 0


def portrait(size: int = SIZE) -> torch.Tensor:
    """The top square of the Grace Hopper photograph, grey, ``(size, size)`` in [0, 1]."""
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(f).convert("L")
    width, _ = image.size
    image = image.crop((0, 0, width, width)).resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


def feature_maps(image: torch.Tensor) -> torch.Tensor:
    """Eight feature maps of the image, ``(8, H, W)``: shifted copies and edge filters.

    They stand in for the channels of a convolutional layer; fixed filters keep the picture
    reproducible without a trained network.
    """
    x = image[None, None]
    kernels = torch.zeros(8, 1, 3, 3)
    kernels[0, 0, 1, 1] = 1.0  # identity
    kernels[1, 0] = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])  # vertical edges
    kernels[2, 0] = kernels[1, 0].T  # horizontal edges
    kernels[3, 0] = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])  # Laplacian
    kernels[4, 0] = 1.0 / 9  # blur
    kernels[5, 0] = torch.tensor([[2.0, 1, 0], [1, 0, -1], [0, -1, -2]])  # diagonal edges
    kernels[6, 0] = kernels[5, 0].flip(1)
    kernels[7, 0, 1, 1] = -1.0  # negative
    maps = torch.nn.functional.conv2d(x, kernels, padding=1)[0]
    lo = maps.amin(dim=(1, 2), keepdim=True)
    hi = maps.amax(dim=(1, 2), keepdim=True)
    return (maps - lo) / (hi - lo)


def tile(maps: torch.Tensor, cols: int = 4, gap: int = 2) -> torch.Tensor:
    """Lay ``(C, H, W)`` maps out on a grid with white gaps, for one picture."""
    c, h, w = maps.shape
    rows = -(-c // cols)
    out = torch.full((rows * (h + gap) - gap, cols * (w + gap) - gap), float("nan"))
    for i in range(c):
        r, k = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = maps[i]
    return out


def save_pair(path: Path, before: torch.Tensor, after: torch.Tensor, title: str) -> None:
    """Write input and training-mode output side by side, with one shared grey scale."""
    before, after = before.detach().numpy(), after.detach().numpy()
    finite = np.concatenate([before[np.isfinite(before)], after[np.isfinite(after)]])
    vmin, vmax = np.percentile(finite, [0.5, 99.5])
    aspect = before.shape[1] / before.shape[0]
    fig = Figure(figsize=(2 * 2.2 * aspect + 0.2, 2.5), dpi=100)
    axes = fig.subplots(1, 2)
    for ax, img, label in zip(axes, (before, after), ("input", "training output"), strict=True):
        ax.imshow(
            np.ma.masked_invalid(img), cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.8, wspace=0.05)
    fig.savefig(path, facecolor="white")


def gallery(out: Path) -> list[Path]:
    """Write one PNG per variant into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    image = portrait()
    maps = feature_maps(portrait(SIZE // 2))
    h, w = image.shape
    written: list[Path] = []

    def emit(name: str, before: torch.Tensor, after: torch.Tensor, title: str) -> None:
        path = out / f"{name}.png"
        save_pair(path, before, after, title)
        written.append(path)

    torch.manual_seed(SEED)
    with torch.no_grad():
        emit(
            "dropout",
            image,
            dkn.Dropout(0.5)(image[None, None])[0, 0],
            "Dropout(0.5): each pixel, kept ones × 2",
        )
        emit(
            "dropout2d",
            tile(maps),
            tile(dkn.Dropout2d(0.5)(maps[None])[0]),
            "Dropout2d(0.5): whole feature maps",
        )
        emit(
            "dropblock2d",
            image,
            dkn.DropBlock2d(0.25, block_size=13)(image[None, None])[0, 0],
            "DropBlock2d(0.25, block_size=13)",
        )
        emit(
            "droppath",
            tile(maps),
            tile(dkn.DropPath(0.5)(maps[:, None])[:, 0]),
            "DropPath(0.5): whole samples of a batch",
        )
        # Rows of the image are time steps, columns the hidden units: (T, N=1, H).
        sequence = image[:, None, :]
        emit(
            "locked",
            image,
            dkn.LockedDropout(0.5)(sequence)[:, 0, :],
            "LockedDropout(0.5): same units every step",
        )
        emit(
            "dropout-per-step",
            image,
            dkn.Dropout(0.5)(sequence)[:, 0, :],
            "Dropout(0.5) on the same sequence",
        )
        emit(
            "gaussian",
            image,
            dkn.GaussianDropout(0.3)(image),
            "GaussianDropout(0.3): × N(1, 0.3/0.7)",
        )
        standardised = (image - image.mean()) / image.std()
        emit(
            "alpha",
            standardised,
            dkn.AlphaDropout(0.3)(standardised),
            "AlphaDropout(0.3): dropped → SELU floor",
        )
        # The image as a weight matrix (out=h, in=w); an identity input returns (W ⊙ M / q)ᵀ.
        layer = dkn.DropConnectLinear(w, h, p=0.5, bias=False)
        layer.weight.copy_(image)
        emit(
            "dropconnect",
            image,
            layer(torch.eye(w)).T,
            "DropConnectLinear(p=0.5): weights",
        )
        # The image as an embedding matrix (V=h rows, D=w); looking up every row shows the mask.
        embedding = torch.nn.Embedding(h, w)
        embedding.weight.copy_(image)
        emit(
            "embedding",
            image,
            dkn.EmbeddingDropout(0.3, embedding=embedding)(torch.arange(h)),
            "EmbeddingDropout(0.3): whole rows",
        )
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent.parent / "img/masks")
    args = parser.parse_args()
    for path in gallery(args.out):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
