"""A model seen as a chain: ``stem → block₀ → … → blockₙ₋₁ → tail``, the block boundaries where a dynamic
method may act (an exit head, token merging, a gate).

A *layout* knows one family's module tree (which children are the blocks, what runs before and after them);
layouts are registered by name in :data:`LAYOUTS` and picked by :func:`find_layout`. Only registered code runs:
a saved dynamic model names its layout, which is looked up here, never imported.

Every chain is checked once against the model it was read from (:meth:`Chain.check`): the chain's output must
equal ``model(x)``, so a layout that misreads a model (a custom ``forward`` that does more) is refused rather
than silently giving other answers.

Example:
    >>> chain = Chain.of(model)                 # e.g. resnet_mini: stem, layers.0 … layers.8, pool+fc
    >>> chain.boundaries()                      # ['layers.0', ..., 'layers.7'] — where exits may go
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import ConfigError, PruningError
from prunekit.models.builtin import ResNetMini, ViTMini
from prunekit.registry import Registry

__all__ = ["LAYOUTS", "Chain", "Layout", "find_layout"]

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.LeakyReLU, nn.Hardswish, nn.ELU)


@dataclass(frozen=True)
class Layout:
    """How one model family splits into a chain.

    Attributes:
        matches: does this layout read ``model``?
        blocks: ``model → [(name, module)]``, in execution order.
        stem: ``(model, x) → h`` before the first block.
        tail: ``(model, h) → logits`` after the last block.
        features: what a block emits: ``image`` (N, C, H, W), ``sequence`` (N, C, L), ``tokens`` (N, T, D, class
            token first) or ``flat`` (N, D).
    """

    matches: Callable[[nn.Module], bool]
    blocks: Callable[[nn.Module], list[tuple[str, nn.Module]]]
    stem: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    tail: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    features: str


#: Layouts by name; :func:`find_layout` tries them in registration order.
LAYOUTS: Registry = Registry("chain layout")
_ORDER: list[str] = []


def _register(name: str, layout: Layout) -> None:
    LAYOUTS.register(name)(layout)
    _ORDER.append(name)


def find_layout(model: nn.Module) -> str:
    """The name of the first registered layout that reads ``model``.

    Raises:
        PruningError: no layout reads it; the message lists the families that work.
    """
    for name in _ORDER:
        if LAYOUTS.get(name).matches(model):
            return name
    raise PruningError(f"{type(model).__name__}: no chain layout reads this model, so its block boundaries are "
                       f"unknown; supported: {', '.join(_ORDER)} (nn.Sequential, resnet_mini, torchvision/timm "
                       "ResNets and ViTs). Fix: wrap the model as an nn.Sequential of blocks")


# --- resnet_mini -------------------------------------------------------------------------------------------
_register("resnet_mini", Layout(
    matches=lambda m: isinstance(m, ResNetMini),
    blocks=lambda m: [(f"layers.{i}", b) for i, b in enumerate(m.layers)],
    stem=lambda m, x: m.stem(x),
    tail=lambda m, h: m.fc(m.pool(h).flatten(1)),
    features="image",
))


# --- vit_mini ----------------------------------------------------------------------------------------------
_register("vit_mini", Layout(
    matches=lambda m: isinstance(m, ViTMini),
    blocks=lambda m: [(f"blocks.{i}", b) for i, b in enumerate(m.blocks)],
    stem=lambda m, x: m.embed(x),
    tail=lambda m, h: m.head(m.norm(h)[:, 0]),
    features="tokens",
))


# --- ResNets of torchvision and timm -----------------------------------------------------------------------
def _is_resnet(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("conv1", "bn1", "maxpool", "layer1", "layer4", "fc")) and \
        (hasattr(m, "avgpool") or hasattr(m, "global_pool"))


def _resnet_stem(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    act = m.relu if hasattr(m, "relu") else m.act1
    return m.maxpool(act(m.bn1(m.conv1(x))))


def _resnet_tail(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    if hasattr(m, "forward_head"):  # timm: global_pool, dropout, fc
        return m.forward_head(h)
    return m.fc(torch.flatten(m.avgpool(h), 1))


_register("resnet", Layout(
    matches=_is_resnet,
    blocks=lambda m: [(f"layer{s}.{i}", b) for s in range(1, 5) for i, b in enumerate(getattr(m, f"layer{s}"))],
    stem=_resnet_stem,
    tail=_resnet_tail,
    features="image",
))


# --- torchvision CNNs with a `features` trunk: MobileNet v2/v3, EfficientNet v1/v2, ConvNeXt, VGG, AlexNet ------
def _is_tv_features(m: nn.Module) -> bool:
    return isinstance(getattr(m, "features", None), nn.Sequential) and isinstance(
        getattr(m, "classifier", None), nn.Module) and len(m.features) >= 2


def _tv_features_tail(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    h = m.avgpool(h) if hasattr(m, "avgpool") else nn.functional.adaptive_avg_pool2d(h, 1)  # MobileNetV2: functional
    if not any(isinstance(c, nn.Flatten) for c in m.classifier.modules()):  # ConvNeXt flattens inside its classifier
        h = torch.flatten(h, 1)
    return m.classifier(h)


_register("torchvision_features", Layout(
    matches=_is_tv_features,
    blocks=lambda m: [(f"features.{n}", b) for n, b in m.features.named_children()],
    stem=lambda m, x: x,
    tail=_tv_features_tail,
    features="image",
))


# --- torchvision RegNet: stem, trunk_output stages of blocks ---------------------------------------------------
def _is_tv_regnet(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("stem", "trunk_output", "avgpool", "fc"))


_register("torchvision_regnet", Layout(
    matches=_is_tv_regnet,
    blocks=lambda m: [(f"trunk_output.{s}.{n}", b) for s, stage in m.trunk_output.named_children()
                      for n, b in stage.named_children()],
    stem=lambda m, x: m.stem(x),
    tail=lambda m, h: m.fc(torch.flatten(m.avgpool(h), 1)),
    features="image",
))


# --- timm EfficientNet / MobileNet (conv_stem, bn1, blocks of stages) ----------------------------------------
def _is_timm_effnet(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("conv_stem", "bn1", "blocks", "forward_head")) and \
        isinstance(m.blocks, nn.Sequential)


def _timm_effnet_tail(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    if hasattr(m, "bn2"):  # EfficientNet: conv_head + bn2 end the features; MobileNetV3 runs conv_head in its head
        h = m.bn2(m.conv_head(h))
    return m.forward_head(h)


_register("timm_efficientnet", Layout(
    matches=_is_timm_effnet,
    blocks=lambda m: [(f"blocks.{s}.{n}", b) for s, stage in m.blocks.named_children()
                      for n, b in stage.named_children()],
    stem=lambda m, x: m.bn1(m.conv_stem(x)),
    tail=_timm_effnet_tail,
    features="image",
))


# --- torchvision VisionTransformer -------------------------------------------------------------------------
def _is_tv_vit(m: nn.Module) -> bool:
    return hasattr(m, "class_token") and hasattr(m, "_process_input") and hasattr(m, "encoder") and \
        hasattr(m.encoder, "layers")


def _tv_vit_stem(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = m._process_input(x)
    x = torch.cat([m.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    return m.encoder.dropout(x + m.encoder.pos_embedding)


_register("torchvision_vit", Layout(
    matches=_is_tv_vit,
    blocks=lambda m: [(f"encoder.layers.{n}", b) for n, b in m.encoder.layers.named_children()],
    stem=_tv_vit_stem,
    tail=lambda m, h: m.heads(m.encoder.ln(h)[:, 0]),
    features="tokens",
))


# --- timm VisionTransformer (ViT, DeiT) ----------------------------------------------------------------------
def _is_timm_vit(m: nn.Module) -> bool:
    return all(hasattr(m, a) for a in ("patch_embed", "_pos_embed", "blocks", "norm", "forward_head"))


def _timm_vit_stem(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = m._pos_embed(m.patch_embed(x))
    for step in ("patch_drop", "norm_pre"):  # absent, or None in some timm families (EVA)
        x = getattr(m, step)(x) if callable(getattr(m, step, None)) else x
    return x


_register("timm_vit", Layout(
    matches=_is_timm_vit,
    blocks=lambda m: [(f"blocks.{i}", b) for i, b in enumerate(m.blocks)],
    stem=_timm_vit_stem,
    tail=lambda m, h: m.forward_head(m.norm(h)),
    features="tokens",
))


# --- nn.Sequential: a block ends at each activation ---------------------------------------------------------
def _sequential_segments(m: nn.Module) -> list[tuple[str, nn.Module]]:
    segments, current, names = [], [], []
    for name, child in m.named_children():
        current.append(child)
        names.append(name)
        if isinstance(child, _ACTIVATIONS):
            segments.append((f"{names[0]}-{names[-1]}" if len(names) > 1 else names[0], nn.Sequential(*current)))
            current, names = [], []
    if current:
        segments.append((f"{names[0]}-{names[-1]}" if len(names) > 1 else names[0], nn.Sequential(*current)))
    return segments


def _seq_blocks(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return _sequential_segments(m)[:-1]


def _seq_tail(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return _sequential_segments(m)[-1][1](h)


_register("sequential", Layout(
    matches=lambda m: isinstance(m, nn.Sequential) and len(_sequential_segments(m)) >= 2,
    blocks=_seq_blocks,
    stem=lambda m, x: x,
    tail=_seq_tail,
    features="auto",
))


class Chain(nn.Module):
    """``model`` run block by block (its own modules, shared, not copied): ``stem``, ``block(i)``, ``tail``.

    A :class:`Chain` holds the model as its only child, so saving its state saves the model's.
    """

    def __init__(self, model: nn.Module, layout: str | None = None) -> None:
        super().__init__()
        self.layout_name = layout or find_layout(model)
        self._layout: Layout = LAYOUTS.get(self.layout_name)
        self.model = model
        named = self._layout.blocks(model)
        self.names = [n for n, _ in named]
        self.blocks = nn.ModuleList([b for _, b in named])
        if not self.names:
            raise PruningError(f"{type(model).__name__}: layout {self.layout_name!r} finds no blocks")
        self._tail_segment = _sequential_segments(model)[-1][1] if self.layout_name == "sequential" else None

    @classmethod
    def of(cls, model: nn.Module, example: torch.Tensor | None = None) -> Chain:
        chain = cls(model)
        if example is not None:
            chain.check(example)
        return chain

    def boundaries(self) -> list[str]:
        """Where a dynamic method may act: after each block but the last (after the last, the tail runs)."""
        return self.names[:-1]

    def index(self, name: str | int) -> int:
        """The block index of a boundary name (or an int index, checked).

        Raises:
            ConfigError: ``name`` is not a block boundary; the message lists the valid ones.
        """
        valid = self.boundaries()
        if isinstance(name, int) and not isinstance(name, bool) and 0 <= name < len(valid):
            return name
        if isinstance(name, str) and name in valid:
            return valid.index(name)
        raise ConfigError(f"exit point {name!r} is not a block boundary of this {type(self.model).__name__} "
                          f"(layout {self.layout_name!r}); valid: {', '.join(valid)} or their indices "
                          f"0..{len(valid) - 1}")

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self._layout.stem(self.model, x)

    def tail(self, h: torch.Tensor) -> torch.Tensor:
        if self._tail_segment is not None:
            return self._tail_segment(h)
        return self._layout.tail(self.model, h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
        return self.tail(h)

    @torch.no_grad()
    def check(self, example: torch.Tensor) -> None:
        """Raises :class:`PruningError` unless the chain computes what ``model`` computes on ``example``."""
        was = self.model.training
        self.model.eval()
        refusal = (f"{type(self.model).__name__}: layout {self.layout_name!r} does not reproduce the model's forward "
                   "(its forward does more than stem → blocks → head, e.g. passes rotary embeddings or masks to its "
                   "blocks), so a dynamic method would change its answers; wrap the model as an nn.Sequential of "
                   "blocks")
        try:
            want = self.model(example)
            try:
                got = self.forward(example)
            except Exception as e:  # the layout's reading of the model does not even run
                raise PruningError(f"{refusal} ({type(e).__name__}: {e})") from e
        finally:
            self.model.train(was)
        if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
            raise PruningError(refusal)

    def feature_kind(self, h: torch.Tensor) -> str:
        """What a block emits (see :class:`Layout`); ``auto`` layouts decide by rank."""
        kind = self._layout.features
        if kind != "auto":
            return kind
        return {4: "image", 3: "sequence", 2: "flat"}.get(h.dim(), "flat")
