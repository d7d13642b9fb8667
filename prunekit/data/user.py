"""Users' own data: a folder of images (one subfolder per class) or a file of tensors.

Both are loaded into memory — the intended use is the small calibration/fine-tuning sets of a
pruning job, not ImageNet-scale training.

Tensor files (``.npz`` via NumPy, ``.pt`` via ``torch.load(weights_only=True)``) hold either
``x_train, y_train, x_val, y_val, x_test, y_test`` or just ``x, y`` (then split 70/10/20%, seed 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prunekit.data.base import DATASETS, DataSplits, split_indices
from prunekit.errors import DataError

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _from_arrays(name: str, arrays: dict[str, torch.Tensor]) -> DataSplits:
    keys = set(arrays)
    full = {"x_train", "y_train", "x_val", "y_val", "x_test", "y_test"}
    if full <= keys:
        t = {k: arrays[k] for k in full}
    elif {"x", "y"} <= keys:
        x, y = arrays["x"], arrays["y"]
        _check_pair(name, "x", "y", x, y)
        y = _labels(name, "y", y)
        if len(x) < _MIN_SAMPLES:
            raise DataError(f"{name}: {len(x)} samples are too few to split 70/10/20% into non-empty train, "
                            f"validation and test sets; give at least {_MIN_SAMPLES}, or give x_train, y_train, "
                            "x_val, y_val, x_test, y_test yourself")
        tr, va, te = split_indices(len(x), (0.7, 0.1, 0.2), 0)
        t = {"x_train": x[tr], "y_train": y[tr], "x_val": x[va], "y_val": y[va],
             "x_test": x[te], "y_test": y[te]}
    else:
        raise DataError(
            f"{name}: expected arrays x, y (or x_train, y_train, x_val, y_val, x_test, y_test); "
            f"found {sorted(keys)}"
        )
    for split in ("train", "val", "test"):
        _check_pair(name, f"x_{split}", f"y_{split}", t[f"x_{split}"], t[f"y_{split}"])
    xs = {k: v.float() for k, v in t.items() if k.startswith("x")}
    ys = {k: _labels(name, k, v) for k, v in t.items() if k.startswith("y")}
    num_classes = int(max(int(v.max()) for v in ys.values())) + 1
    if num_classes < 2:
        raise DataError(f"{name}: every label is 0, a single class; a classifier needs at least 2 classes")
    if num_classes > _MAX_CLASSES:
        raise DataError(f"{name}: the largest label is {num_classes - 1}, so the model would get {num_classes:,} "
                        f"outputs; labels must be class indices 0..C-1 (at most {_MAX_CLASSES:,} classes)")
    return DataSplits(name, xs["x_train"], ys["y_train"], xs["x_val"], ys["y_val"], xs["x_test"],
                      ys["y_test"], num_classes)


_MIN_SAMPLES = 10
_MAX_CLASSES = 100_000


def _check_pair(name: str, xk: str, yk: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """Inputs and labels of one split: as many of each, at least one, finite inputs."""
    if x.dim() < 1 or y.dim() != 1:
        raise DataError(f"{name}: {yk} must be 1-D class indices and {xk} one row per sample; got shapes "
                        f"{list(x.shape)} and {list(y.shape)}")
    if len(x) != len(y):
        raise DataError(f"{name}: {xk} has {len(x)} samples but {yk} has {len(y)} labels; give one label per sample")
    if len(x) == 0:
        raise DataError(f"{name}: {xk} is empty")
    if x.is_floating_point() or x.is_complex():
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise DataError(f"{name}: {xk} holds {bad} NaN or infinite values; clean or impute them first")


def _labels(name: str, key: str, y: torch.Tensor) -> torch.Tensor:
    """Class indices 0..C-1 as int64; fractional or negative labels are refused, not truncated."""
    if y.dtype == torch.bool or y.is_complex():
        raise DataError(f"{name}: {key} is {y.dtype}; labels must be integer class indices 0..C-1")
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()) or not bool((y == y.round()).all()):
            frac = y[torch.isfinite(y) & (y != y.round())][:3].tolist()
            raise DataError(f"{name}: {key} holds non-integer labels (e.g. {frac}); labels must be integer class "
                            "indices 0..C-1 (this is classification, not regression)")
    if bool((y < 0).any()):
        raise DataError(f"{name}: {key} holds negative labels (smallest {int(y.min())}); labels must be class "
                        "indices 0..C-1")
    return y.long()


@DATASETS.register("tensors")
def tensor_file(path: str) -> DataSplits:
    """Tensors from a ``.npz`` or ``.pt`` file (see the module docstring for the keys)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"dataset file {str(p)!r} does not exist")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: torch.from_numpy(z[k]) for k in z.files}
        elif p.suffix in (".pt", ".pth"):
            loaded = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict):
                raise DataError(f"{p}: expected a dict of tensors, found {type(loaded).__name__}")
            arrays = {k: torch.as_tensor(v) for k, v in loaded.items()}
        else:
            raise DataError(f"dataset file {str(p)!r}: unknown suffix {p.suffix!r}; use .npz or .pt")
    except DataError:
        raise
    except Exception as e:  # corrupt file, pickled objects, ...
        raise DataError(f"cannot read dataset file {str(p)!r}: {e}") from e
    return _from_arrays(p.name, arrays)


@DATASETS.register("imagefolder")
def image_folder(path: str, image_size: int = 28, grayscale: bool = True, resize: int | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 interpolation: str = "bilinear") -> DataSplits:
    """Images under ``path/<class>/*.png``, split 70/10/20%.

    Without ``mean``/``std``: resized to ``image_size`` squares and standardised with the folder's own mean
    and std. With them (a pretrained model's preprocessing, e.g. ImageNet's; a recipe with a
    ``torchvision:``/``timm:`` model fills them in from the model's data config): the shorter side resized
    to ``resize`` (default ``image_size``), centre-cropped to ``image_size``, scaled to [0, 1] and
    normalised per channel.
    """
    try:
        from PIL import Image
    except ImportError:
        raise DataError("image folders need Pillow: pip install 'prunekit[data]'") from None
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise DataError(f"image folder {str(root)!r} needs one subfolder per class (found {len(classes)})")
    norm = _normalisation(image_size, resize, mean, std, grayscale, interpolation)
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                img = Image.open(f).convert("L" if grayscale else "RGB")
            except Exception as e:
                raise DataError(f"cannot read image {str(f)!r}: {e}") from e
            img = _resize_crop(img, image_size, norm)
            arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
            xs.append(arr.unsqueeze(0) if grayscale else arr.permute(2, 0, 1))
            ys.append(label)
    if len(xs) < 10:
        raise DataError(f"image folder {str(root)!r} holds only {len(xs)} images; need at least 10")
    x = torch.stack(xs)
    if norm is None:
        x = (x - x.mean()) / (x.std() + 1e-8)
    else:
        x = (x - norm["mean"].view(1, -1, 1, 1)) / norm["std"].view(1, -1, 1, 1)
    return _from_arrays(root.name, {"x": x, "y": torch.tensor(ys)})


_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


def _normalisation(size: int, resize: int | None, mean, std, grayscale: bool, interpolation: str) -> dict | None:
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4096:
        raise DataError(f"imagefolder image_size must be an integer in [1, 4096] pixels, got {size!r}")
    if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or not size <= resize <= 8192):
        raise DataError(f"imagefolder resize must be an integer ≥ image_size ({size}), got {resize!r}")
    if interpolation not in _INTERPOLATIONS:
        raise DataError(f"imagefolder interpolation {interpolation!r} is not one of: {', '.join(_INTERPOLATIONS)}")
    if (mean is None) != (std is None):
        raise DataError("imagefolder mean and std go together (per-channel normalisation); give both or neither")
    if mean is None:
        return None if resize is None else {"resize": resize, "mean": None, "std": None, "interp": interpolation}
    channels = 1 if grayscale else 3
    for what, v in (("mean", mean), ("std", std)):
        if (not isinstance(v, (list, tuple)) or len(v) != channels
                or not all(isinstance(c, (int, float)) and np.isfinite(c) for c in v)):
            raise DataError(f"imagefolder {what} must be {channels} finite numbers (one per channel), got {v!r}")
    if not all(c > 0 for c in std):
        raise DataError(f"imagefolder std must be > 0 per channel, got {std!r}")
    return {"resize": resize or size, "mean": torch.tensor(mean, dtype=torch.float32),
            "std": torch.tensor(std, dtype=torch.float32), "interp": interpolation}


def _resize_crop(img, size: int, norm: dict | None):
    """A square resize (no preprocessing given), or the shorter side to ``resize`` then a centre crop."""
    from PIL import Image

    if norm is None:
        return img.resize((size, size))
    resample = getattr(Image.Resampling, norm["interp"].upper())
    w, h = img.size
    scale = norm["resize"] / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))
