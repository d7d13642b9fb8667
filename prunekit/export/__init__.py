"""Export for inference: turn a (pruned) training model into the faster model one deploys.

- :func:`fold_batchnorm`: merge each BatchNorm into the convolution before it.
- :func:`prepare_inference`: a copy in eval mode, BatchNorm folded, optionally in channels-last
  memory format (:class:`InferenceConfig`).
- :func:`export_onnx`: an ONNX file, verified against PyTorch in ONNX Runtime before it is kept;
  :func:`quantize_onnx`: its int8 version (static QDQ or dynamic); :func:`evaluate_onnx` and
  :func:`compare_onnx_latency`: accuracy and latency measured in ONNX Runtime; :func:`deploy_onnx`: all
  of it for a pruned model beside its dense original (the report's ``deployed`` / ``dense_deployed``), for tensor data
  or (:class:`TextDeploy`) a Hugging Face encoder on tokenised text. These need the
  ``[deploy]`` extra (onnx, onnxruntime, onnxscript), imported only when called.
- :func:`sparsify_for_cpu`: sparse CSR/BSR kernels for the layers where they are measured faster.
- :func:`save_sparse_int8` / :func:`load_sparse_int8`: a pruned model's weights as a compressed sparse int8 file.
- :func:`time_runners` (from :mod:`prunekit.measure`): PyTorch models and ONNX Runtime sessions timed side by side
  (wall and CPU time).
"""

from prunekit.export.deploy_data import DeployData, ImageDeploy, TextDeploy
from prunekit.export.fold import fold_batchnorm, foldable_pairs
from prunekit.export.inference import InferenceConfig, prepare_inference
from prunekit.export.onnx_deploy import DEPLOY_FILES, TorchVariant, deploy_onnx
from prunekit.export.onnx_export import EXPORTERS, ExportResult, OutputDiff, export_onnx
from prunekit.export.onnx_runtime import OnnxEval, compare_onnx_latency, evaluate_onnx, ort_session
from prunekit.export.quantize import QUANT_MODES, QuantizeResult, quantize_onnx
from prunekit.export.sparse import KERNELS, SparseDecision, SparseLinear, SparsifyResult, sparsify_for_cpu
from prunekit.export.sparse_int8 import load_sparse_int8, save_sparse_int8
from prunekit.measure.latency import time_runners  # the one timing loop, re-exported here for deployment

__all__ = [
    "DEPLOY_FILES",
    "DeployData",
    "ImageDeploy",
    "TextDeploy",
    "EXPORTERS",
    "KERNELS",
    "QUANT_MODES",
    "ExportResult",
    "InferenceConfig",
    "OnnxEval",
    "OutputDiff",
    "QuantizeResult",
    "SparseDecision",
    "SparseLinear",
    "SparsifyResult",
    "TorchVariant",
    "compare_onnx_latency",
    "deploy_onnx",
    "evaluate_onnx",
    "export_onnx",
    "fold_batchnorm",
    "load_sparse_int8",
    "foldable_pairs",
    "ort_session",
    "prepare_inference",
    "quantize_onnx",
    "save_sparse_int8",
    "sparsify_for_cpu",
    "time_runners",
]
