"""Layer adapters: after slicing, each layer type resynchronises its shape attributes.

The dependency graph slices parameters and buffers directly (it knows which dim of which tensor
belongs to which unit); what a layer type knows is only how its attributes (``out_channels``,
``num_features``, ``groups``...) derive from its tensors. One adapter per layer type, registered
by class name and looked up along the MRO, so subclasses (timm's ``LayerNorm2d``, ``StdConv2d``)
inherit the right one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from prunekit.graph import HEAD_ATTRS, INNER_ATTRS, replacement_for
from prunekit.registry import Registry

Adapter = Callable[[nn.Module, dict], None]
LAYER_ADAPTERS: Registry[Adapter] = Registry("layer adapter")

# Attribute names holding a head count or a heads x head_dim size, rewritten when heads are pruned
# (defined by the graph, whose rules recognise them).
__all__ = ["HEAD_ATTRS", "INNER_ATTRS", "LAYER_ADAPTERS", "adapter_for", "snapshot"]


def adapter_for(module: nn.Module) -> Adapter | None:
    for cls in type(module).__mro__:
        if cls.__name__ in LAYER_ADAPTERS:
            return LAYER_ADAPTERS.get(cls.__name__)
    return None


def snapshot(module: nn.Module) -> dict:
    """Attributes an adapter may need from before the slicing (old sizes)."""
    return {k: v for k, v in vars(module).items() if isinstance(v, (int, tuple)) and not k.startswith("_")}


@LAYER_ADAPTERS.register("_ConvNd")
def conv(m: nn.Module, old: dict) -> None:
    w = m.weight
    if m.transposed:
        if old["groups"] > 1 and old["in_channels"] == old["groups"]:
            m.groups = w.shape[0]
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
        return
    if old["groups"] > 1 and old["in_channels"] == old["groups"]:  # depthwise: one group per input
        per = old["out_channels"] // old["groups"]
        m.groups = w.shape[0] // per
    m.out_channels, m.in_channels = w.shape[0], w.shape[1] * m.groups


@LAYER_ADAPTERS.register("Linear")
def linear(m: nn.Module, old: dict) -> None:
    m.out_features, m.in_features = m.weight.shape


@LAYER_ADAPTERS.register("_NormBase")
def batch_norm(m: nn.Module, old: dict) -> None:
    ref = m.weight if m.weight is not None else m.running_mean
    if ref is not None:
        m.num_features = ref.shape[0]


@LAYER_ADAPTERS.register("LayerNorm")
def layer_norm(m: nn.Module, old: dict) -> None:
    if m.weight is not None:
        m.normalized_shape = tuple(m.weight.shape)


@LAYER_ADAPTERS.register("RMSNorm")
def rms_norm(m: nn.Module, old: dict) -> None:
    w = getattr(m, "weight", None)
    if w is not None and hasattr(m, "normalized_shape"):
        m.normalized_shape = tuple(w.shape)


@LAYER_ADAPTERS.register("GroupNorm")
def group_norm(m: nn.Module, old: dict) -> None:
    if m.weight is None:
        return
    if old["num_groups"] == old["num_channels"]:
        m.num_groups = m.weight.shape[0]
    m.num_channels = m.weight.shape[0]


@LAYER_ADAPTERS.register("Embedding")
def embedding(m: nn.Module, old: dict) -> None:
    m.num_embeddings, m.embedding_dim = m.weight.shape


@LAYER_ADAPTERS.register("PReLU")
def prelu(m: nn.Module, old: dict) -> None:
    m.num_parameters = m.weight.numel()


@LAYER_ADAPTERS.register("Conv1D")
def hf_conv1d(m: nn.Module, old: dict) -> None:
    """transformers' GPT-2 ``Conv1D``: a Linear with a transposed weight (in, out)."""
    m.nx, m.nf = m.weight.shape


def _switch_to_replacement(m: nn.Module) -> None:
    cls = replacement_for(m)
    if cls is not None:
        m.__class__ = cls


@LAYER_ADAPTERS.register("MultiheadAttention")
def multihead_attention(m: nn.Module, old: dict) -> None:
    """Heads (or input widths) removed: sizes follow the weights, and the module switches to
    :class:`~prunekit.structured.layers.PrunedMultiheadAttention`, whose forward allows an inner width
    ``num_heads * head_dim`` other than ``embed_dim`` (the stock forward does not)."""
    packed = m.in_proj_weight is not None
    q_rows = m.in_proj_weight.shape[0] // 3 if packed else m.q_proj_weight.shape[0]
    m.num_heads = q_rows // m.head_dim  # heads are pruned whole: head_dim never changes
    m.embed_dim = m.out_proj.weight.shape[0]
    m.kdim = m.in_proj_weight.shape[1] if packed else m.k_proj_weight.shape[1]
    m.vdim = m.in_proj_weight.shape[1] if packed else m.v_proj_weight.shape[1]
    _switch_to_replacement(m)


@LAYER_ADAPTERS.register("ShiftedWindowAttention")
def shifted_window_attention(m: nn.Module, old: dict) -> None:
    """torchvision Swin (v1, v2): heads removed; the replacement takes ``head_dim`` from the weights, the
    stock function from the input width."""
    per_head = m.logit_scale if hasattr(m, "logit_scale") else m.relative_position_bias_table.T
    m.num_heads = per_head.shape[0]
    _switch_to_replacement(m)
