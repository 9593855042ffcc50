"""Exports of an artifact for other runtimes: an ONNX graph (onnxruntime, Triton) and a Triton model repository.

    python -m models.export onnx artifacts/breast_cancer model.onnx --triton model_repository

See models/export/__main__.py for the command, onnx_graph.py for the graph and its verification, triton.py for
the repository layout.
"""

from models.export.onnx_graph import DEFAULT_OPSET, OnnxExport, export_onnx, verify_onnx
from models.export.triton import triton_config, write_triton_repository
