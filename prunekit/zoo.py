"""Model strings for ``prunekit check`` and the coverage benchmark, with example inputs.

``torchvision:NAME``  ``torchvision.models.get_model(NAME, weights=None)``
``timm:NAME``         ``timm.create_model(NAME, pretrained=False)``
``hf:MODEL_TYPE``     a transformers model from ``AutoConfig.for_model(MODEL_TYPE)`` shrunk to a tiny
                      size (any model type: the size fields are found by name, not from a list of models)
``hf:DIR``            the model in a local Hugging Face directory (as recipes read ``hf:PATH``); its own
                      code is never run
``pkg.module:factory`` ``factory()`` from an importable module

Image sizes come from the model's own config where it has one (timm ``pretrained_cfg``, a
torchvision weights entry's ``min_size``/crop size, an HF ``image_size``); text models get token ids.
No weights are ever downloaded.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, ModelLoadError

__all__ = ["ZooModel", "build", "load", "preprocessing", "shrink_config"]


@dataclass
class ZooModel:
    """A built model and inputs that run it."""

    spec: str
    model: nn.Module
    example_inputs: Any  # tuple of positional inputs or dict of keyword inputs
    kind: str  # image, detection, segmentation, video, optical_flow, text, audio, multimodal, custom
    #: modules whose channels must be kept, with the reason (a size the forward uses as a value)
    pinned: dict[str, str] = field(default_factory=dict)
    #: submodules compared besides the output (a detector's heads, before its discontinuous post-processing)
    compare_at: tuple[str, ...] = ()


def load(spec: str, image_size: int | None = None, batch: int = 1, small: bool = False) -> ZooModel:
    """Builds the model named by ``spec`` (see the module docstring) with example inputs.

    Args:
        image_size: overrides the image size from the model's config.
        batch: batch size of the example inputs.
        small: use the smallest image size the model accepts (fast coverage runs).
    """
    source, sep, name = spec.partition(":")
    if not sep or not name:
        raise ConfigError(f"model {spec!r} must look like torchvision:NAME, timm:NAME, hf:MODEL_TYPE or "
                          f"package.module:factory")
    torch.manual_seed(0)
    if source == "torchvision":
        return _torchvision(spec, name, image_size, batch, small)
    if source == "timm":
        return _timm(spec, name, image_size, batch, small)
    if source == "hf":
        return _hf(spec, name, batch)
    return _factory(spec, source, name, image_size or 224, batch)


def build(spec: str, kwargs: dict[str, Any] | None = None, num_classes: int | None = None) -> nn.Module:
    """A ``torchvision:NAME`` or ``timm:NAME`` model with the builder's keyword arguments (no weights downloaded).

    ``num_classes`` (from the data) is passed unless ``kwargs`` sets it; a different value there is an error.
    """
    source, _, name = spec.partition(":")
    kwargs = dict(kwargs or {})
    if num_classes is not None:
        given = kwargs.setdefault("num_classes", num_classes)
        if given != num_classes:
            raise ConfigError(f"model {spec!r}: kwargs num_classes={given!r}, but the data has {num_classes} classes")
    if source == "torchvision":
        tv = _need("torchvision", "vision")
        if name not in tv.models.list_models():
            raise ConfigError(f"torchvision has no model {name!r}")
        call = lambda: tv.models.get_model(name, weights=None, **{**tv_kwargs(tv, name), **kwargs})  # noqa: E731
    elif source == "timm":
        timm = _need("timm", "vision")
        if not timm.is_model(name):
            raise ConfigError(f"timm has no model {name!r}; list them with timm.list_models('{name[:4]}*')")
        call = lambda: timm.create_model(name, pretrained=False, **kwargs)  # noqa: E731
    else:
        raise ConfigError(f"model {spec!r}: the zoo builds torchvision:NAME and timm:NAME")
    try:
        model = call()
    except TypeError as e:
        raise ConfigError(f"model {spec!r} does not take kwargs {sorted(kwargs)}: {e}") from None
    except Exception as e:
        raise ModelLoadError(f"model {spec!r} with kwargs {kwargs} failed to build: {type(e).__name__}: {e}") from None
    _refuse_ignored(spec, model, kwargs)
    return model


def _refuse_ignored(spec: str, model: nn.Module, kwargs: dict[str, Any]) -> None:
    """Builders that end in ``**kwargs`` accept any name and drop the ones no ``__init__`` reads (torchvision's
    MobileNetV3 takes ``bogus=1``); a kwarg that no ``__init__`` of the model's classes names is refused."""
    known: set[str] = set()
    for cls in type(model).__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            try:
                known |= set(inspect.signature(init).parameters)
            except (TypeError, ValueError):
                return
    if spec.startswith("torchvision:"):  # the builder's own arguments (trainable_backbone_layers, ...)
        tv = _need("torchvision", "vision")
        known |= set(inspect.signature(tv.models.get_model_builder(spec.partition(":")[2])).parameters)
    if spec.startswith("timm:"):  # create_model's own arguments and those timm routes to every model
        known |= {"drop_rate", "drop_path_rate", "drop_block_rate", "global_pool", "in_chans", "img_size",
                  "pretrained_cfg_overlay", "scriptable", "exportable", "no_jit", "features_only"}
    ignored = sorted(set(kwargs) - known)
    if ignored:
        raise ConfigError(f"model {spec!r} ignores kwargs {ignored} (no __init__ of {type(model).__name__} reads "
                          "them); remove them or check the spelling")


def preprocessing(spec: str) -> dict[str, Any]:
    """The image preprocessing a zoo model's weights were trained with, as ``imagefolder`` options:
    ``image_size`` (crop), ``resize`` (shorter side before the crop), ``mean``/``std``, ``interpolation``,
    ``grayscale: False``; ImageNet's defaults where the model names none."""
    source, _, name = spec.partition(":")
    out: dict[str, Any] = {"image_size": 224, "resize": 256, "mean": [0.485, 0.456, 0.406],
                           "std": [0.229, 0.224, 0.225], "interpolation": "bilinear", "grayscale": False}
    if source == "timm":
        cfg = _need("timm", "vision").get_pretrained_cfg(name)
        if cfg is not None:
            size = int(cfg.input_size[-1])
            out.update(image_size=size, resize=max(size, int(round(size / (cfg.crop_pct or 0.875)))),
                       mean=[float(v) for v in cfg.mean], std=[float(v) for v in cfg.std])
            if cfg.interpolation in ("bilinear", "bicubic", "nearest"):
                out["interpolation"] = cfg.interpolation
    elif source == "torchvision":
        tv = _need("torchvision", "vision")
        try:
            t = next(iter(tv.models.get_model_weights(name))).transforms()
            out.update(image_size=int(t.crop_size[0]), resize=int(t.resize_size[0]),
                       mean=[float(v) for v in t.mean], std=[float(v) for v in t.std],
                       interpolation=str(getattr(t.interpolation, "value", "bilinear")))
        except (ValueError, StopIteration, AttributeError, TypeError, IndexError):
            pass
    return out


def _need(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ModelLoadError(f"{module} is not installed; install prunekit[{extra}]") from e


#: What a torchvision family's models take by default (``--input-shape`` / ``--inputs`` override it).
_TV_FAMILIES = ("detection", "segmentation", "video", "optical_flow", "quantization")


#: A torchvision detector's prediction heads (what its post-processing reads).
_DETECTION_HEADS = ("head", "rpn.head", "roi_heads.box_predictor", "roi_heads.mask_predictor",
                    "roi_heads.keypoint_predictor")


def tv_family(tv: Any, name: str) -> str:
    """``detection``, ``segmentation``, ``video``, ``optical_flow``, ``quantization`` or ``image``."""
    for family in _TV_FAMILIES:
        if name in tv.models.list_models(module=getattr(tv.models, family)):
            return family
    return "image"


def tv_kwargs(tv: Any, name: str, size: int | None = None) -> dict[str, Any]:
    """The builder arguments that keep a torchvision builder offline and small: no backbone weights, detection
    images resized to ``size`` (not for SSD builders, which fix their own size), float quantizable models."""
    family, kwargs = tv_family(tv, name), {}
    if family in ("detection", "segmentation"):
        kwargs["weights_backbone"] = None
    if family == "detection" and not name.startswith("ssd") and size is not None:
        kwargs.update(min_size=size, max_size=size)
    if family == "quantization":
        kwargs["quantize"] = False
    return kwargs


def _torchvision(spec: str, name: str, size: int | None, batch: int, small: bool) -> ZooModel:
    tv = _need("torchvision", "vision")
    if name not in tv.models.list_models():
        close = [n for n in tv.models.list_models() if name[:4] in n][:8]
        raise ConfigError(f"torchvision has no model {name!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    family = tv_family(tv, name)
    det_size = size or 320
    model = tv.models.get_model(name, weights=None, **tv_kwargs(tv, name, det_size)).eval()
    if family == "detection":
        if name.startswith("ssd"):  # the builder fixes the size its transform resizes to
            det_size = size or (320 if "320" in name else 300)
        heads = tuple(n for n in _DETECTION_HEADS if n in dict(model.named_modules()))
        return ZooModel(spec, model, ([torch.rand(3, det_size, det_size) for _ in range(batch)],), "detection",
                        compare_at=heads)
    if family == "video":
        frames, s = _tv_clip(tv, name, small)
        s = size or s
        return ZooModel(spec, model, (torch.randn(batch, 3, frames, s, s),), "video")
    if family == "optical_flow":  # two frames; RAFT's correlation pyramid needs sides divisible by 8, ≥ 128
        s = size or 128
        why = "RAFT divides its correlation volume by √(feature channels), so the feature width is kept"
        return ZooModel(spec, model, (torch.rand(batch, 3, s, s), torch.rand(batch, 3, s, s)), "optical_flow",
                        {"feature_encoder.conv": why})
    s = size or getattr(model, "image_size", None) or _tv_size(tv, name, small)
    return ZooModel(spec, model, (torch.randn(batch, 3, s, s),), "segmentation" if family == "segmentation"
                    else "image")


def _tv_size(tv: Any, name: str, small: bool) -> int:
    try:
        entry = next(iter(tv.models.get_model_weights(name)))
        if small:
            return max(int(entry.meta.get("min_size", (32, 32))[0]), 64 if "inception" not in name else 75)
        return int(entry.transforms().crop_size[0])
    except (ValueError, StopIteration, AttributeError, KeyError, TypeError, IndexError):
        return 64 if small else 224


def _tv_clip(tv: Any, name: str, small: bool) -> tuple[int, int]:
    """(frames, side) of a video model's clip: 16 frames at its weights' crop size; fewer, smaller frames with
    ``small`` where the model has no fixed size (MViT's positional embedding fixes 16 × 224²; S3D pools 2 × 7²)."""
    fixed = name.startswith(("mvit", "s3d"))
    try:
        side = int(next(iter(tv.models.get_model_weights(name))).transforms().crop_size[0])
    except (ValueError, StopIteration, AttributeError, KeyError, IndexError):
        side = 112
    if small and not fixed:
        return 8, min(side, 64)
    return 16, side


def _timm(spec: str, name: str, size: int | None, batch: int, small: bool) -> ZooModel:
    timm = _need("timm", "vision")
    try:
        model = timm.create_model(name, pretrained=False).eval()
    except RuntimeError as e:
        raise ConfigError(f"timm has no model {name!r}: {e}") from e
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    c, h, w = cfg.get("input_size", (3, 224, 224))
    if size is None and small and not cfg.get("fixed_input_size", False) and not _needs_fixed_size(model):
        h = w = 128
    if size is not None:
        h = w = size
    return ZooModel(spec, model, (torch.randn(batch, c, h, w),), "image")


def _needs_fixed_size(model: nn.Module) -> bool:
    return any(hasattr(model, a) for a in ("pos_embed", "patch_embed", "stem")) and hasattr(model, "patch_embed")


_SIZES = {
    "hidden_size": 64, "d_model": 64, "n_embd": 64, "embed_dim": 64, "projection_dim": 32,
    "intermediate_size": 128, "d_ff": 128, "n_inner": 128, "ffn_dim": 128, "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128, "num_hidden_layers": 2, "num_layers": 2, "n_layer": 2, "num_decoder_layers": 2,
    "encoder_layers": 2, "decoder_layers": 2, "num_attention_heads": 4, "n_head": 4, "num_heads": 4,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4, "head_dim": 16, "d_kv": 16,
    "image_size": 32, "patch_size": 8, "vocab_size": 1000, "max_position_embeddings": 128,
    "n_positions": 128, "type_vocab_size": 2, "max_source_positions": 64, "max_target_positions": 64,
}

_HEAD_LISTS = {"num_heads", "num_attention_heads", "heads"}


def shrink_config(config: Any) -> Any:
    """Shrinks every size field of a transformers config (and its sub-configs) in place.

    Key/value heads become half the heads where the config has the field, so a LLaMA-style
    config exercises grouped-query attention.
    """
    for key, value in list(vars(config).items()):
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            shrink_config(value)
        elif key in _SIZES and isinstance(value, int) and not isinstance(value, bool):
            setattr(config, key, min(value, _SIZES[key]) if key != "head_dim" else _SIZES[key])
        elif key in _HEAD_LISTS and isinstance(value, (list, tuple)) and all(type(v) is int for v in value):
            # Swin's per-stage heads (3, 6, 12, 24): powers of two, so they divide the shrunk widths
            setattr(config, key, type(value)(1 << (min(v, _SIZES["num_heads"]).bit_length() - 1) for v in value))
    if isinstance(getattr(config, "num_key_value_heads", None), int):
        config.num_key_value_heads = 2
    layers = getattr(config, "num_hidden_layers", None)
    if isinstance(getattr(config, "layer_types", None), list) and isinstance(layers, int):
        config.layer_types = config.layer_types[:layers]
    _fit_windows(config)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int):  # special token ids (whisper's pad 50257) must stay inside the smaller vocabulary
        for key, value in list(vars(config).items()):
            if key.endswith("token_id") and isinstance(value, int) and value >= vocab:
                setattr(config, key, vocab - 1)
    return config


def _fit_windows(config: Any) -> None:
    """Swin-style configs: every stage of the shrunk image must still hold a whole attention window.

    transformers' Swin fails on stages smaller than its window (its relative-position bias keeps
    the configured window size), so the window becomes 2 and the patches small enough that the last
    of the halving stages is 2 x 2.
    """
    window, depths = getattr(config, "window_size", None), getattr(config, "depths", None)
    size, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if not all(type(v) is int for v in (window, size, patch)) or not isinstance(depths, (list, tuple)):
        return
    config.window_size = min(window, 2)
    config.patch_size = max(1, min(patch, size // (2 * 2 ** (len(depths) - 1))))


def _hf(spec: str, model_type: str, batch: int) -> ZooModel:
    tr = _need("transformers", "hf")
    directory = Path(model_type).expanduser()
    if directory.is_dir():  # a local Hugging Face directory, as recipes, sensitivity and export read hf:PATH
        if not (directory / "config.json").is_file():
            raise ModelLoadError(f"model {spec!r}: {str(directory)!r} has no config.json; it is not a Hugging Face "
                                 "model directory (write one with model.save_pretrained(DIR))")
        try:  # local files only, and never the directory's own code (trust_remote_code stays off)
            model = tr.AutoModel.from_pretrained(directory, local_files_only=True, trust_remote_code=False).eval()
        except Exception as e:
            raise ModelLoadError(f"cannot load the transformers model in {str(directory)!r}: {e}") from e
    else:
        try:
            config = tr.AutoConfig.for_model(model_type)
        except ValueError as e:
            raise ConfigError(f"transformers has no model type {model_type!r}, and {model_type!r} is not a local "
                              "model directory: give a model type (e.g. hf:bert, a tiny random config) or the "
                              "path of a directory written by save_pretrained") from e
        shrink_config(config)
        try:
            model = tr.AutoModel.from_config(config).eval()
        except Exception as e:
            raise ModelLoadError(f"cannot build a transformers {model_type!r} model from its config: {e}") from e
    inputs = hf_inputs(model, batch)
    kind = ("audio" if {"input_values", "input_features"} & set(inputs) else
            "multimodal" if {"input_ids", "pixel_values"} <= set(inputs) else
            "image" if "pixel_values" in inputs else "text")
    return ZooModel(spec, model, inputs, kind)


def hf_inputs(model: nn.Module, batch: int = 1, seq: int = 16) -> dict:
    """Keyword inputs for a transformers model, chosen from its forward signature and config: token ids,
    images (``pixel_values``, 64 px where the config names no size), raw audio (``input_values``) or
    spectrogram frames (``input_features``), and decoder ids for encoder-decoders."""
    params = set(inspect.signature(model.forward).parameters) | {getattr(model, "main_input_name", "")}
    config = model.config
    text = getattr(config, "text_config", None) or config
    vision = getattr(config, "vision_config", None) or config
    inputs: dict[str, torch.Tensor] = {}
    if "input_ids" in params and getattr(text, "vocab_size", None):
        inputs["input_ids"] = torch.randint(0, text.vocab_size, (batch, seq))
    if "pixel_values" in params and getattr(vision, "num_channels", None):
        s = getattr(vision, "image_size", None) or 64
        s = s if isinstance(s, int) else s[0]
        inputs["pixel_values"] = torch.randn(batch, vision.num_channels, s, s)
    if "input_values" in params:  # waveform; 4,000 samples leave a dozen frames after a wav2vec2-style stem
        inputs["input_values"] = torch.randn(batch, 4000)
    if "input_features" in params and getattr(config, "num_mel_bins", None):
        frames = 2 * getattr(config, "max_source_positions", 64)  # whisper's conv stem halves the frames
        inputs["input_features"] = torch.randn(batch, config.num_mel_bins, frames)
    if "decoder_input_ids" in params and getattr(config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = torch.randint(0, text.vocab_size, (batch, seq // 2))
    if not inputs:
        raise ModelLoadError(f"cannot choose inputs for {type(model).__name__}: it takes none of input_ids, "
                             f"pixel_values, input_values, input_features; build the model yourself and use "
                             f"the Python API")
    return inputs


def _factory(spec: str, module: str, factory: str, size: int, batch: int) -> ZooModel:
    try:
        fn = getattr(importlib.import_module(module), factory)
    except (ImportError, AttributeError) as e:
        raise ModelLoadError(f"cannot import {factory!r} from {module!r}: {e}") from e
    try:
        model = fn()
    except Exception as e:
        raise ModelLoadError(f"{spec}() failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return ZooModel(spec, model.eval(), (torch.randn(batch, 3, size, size),), "custom")
