"""Dynamic, input-dependent pruning: the network spends less on easy inputs.

One registry, :data:`DYNAMIC_METHODS` (a recipe's ``dynamic:`` keys):

- ``early_exit`` (BranchyNet, Teerapittayanon et al. 2016): exit heads after blocks, an input leaves at the first
  confident one (:mod:`.early_exit`, thresholds chosen on validation in :mod:`.thresholds`).
- ``token_merge`` (ToMe, Bolya et al. 2023) and ``token_keep`` (EViT, Liang et al. 2022): fewer tokens per block in
  vision transformers, training-free (:mod:`.tokens`).
- ``channel_gate`` (after FBS, Gao et al. 2019): per input, only the top-k inner channels of each residual block
  are computed (:mod:`.gates`).

A model is read as a chain of blocks (:mod:`.chain`); a dynamic model is saved beside its static one and loads
back from data only (:mod:`.serialize`); its measurement counts MACs on the path each input takes and times
batch 1 over every test input (:mod:`.measure`).
"""

from prunekit.dynamic import early_exit_method as _early_exit_method  # noqa: F401  (registers early_exit)
from prunekit.dynamic import gates_method as _gates_method  # noqa: F401  (registers channel_gate)
from prunekit.dynamic import tokens_method as _tokens_method  # noqa: F401  (registers token_merge, token_keep)
from prunekit.dynamic.api import DynamicConfig, build_dynamic, measure_dynamic, outputs_equal
from prunekit.dynamic.base import DYNAMIC_METHODS, BuildContext, DynamicMethod
from prunekit.dynamic.chain import LAYOUTS, Chain, find_layout
from prunekit.dynamic.confidence import CONFIDENCE
from prunekit.dynamic.early_exit import EarlyExitConfig, EarlyExitModel, attach_exits, train_exits
from prunekit.dynamic.gates import ChannelGateConfig, GatedModel
from prunekit.dynamic.heads import HEADS
from prunekit.dynamic.serialize import load_dynamic, save_dynamic
from prunekit.dynamic.tokens import TokenKeepConfig, TokenMergeConfig, TokenModel

__all__ = ["CONFIDENCE", "DYNAMIC_METHODS", "HEADS", "LAYOUTS", "BuildContext", "Chain", "DynamicConfig",
           "DynamicMethod", "EarlyExitConfig", "EarlyExitModel", "attach_exits", "build_dynamic", "find_layout",
           "load_dynamic", "measure_dynamic", "outputs_equal", "save_dynamic", "train_exits", "TokenKeepConfig",
           "TokenMergeConfig", "TokenModel", "ChannelGateConfig", "GatedModel"]
