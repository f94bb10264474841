"""Deployment exports: ONNX graphs with a parity check (:mod:`medseg.export.onnx`) and an onnxruntime
backend for prediction (:mod:`medseg.export.runtime`).

``onnx``/``onnxscript``/``onnxruntime`` are optional (``pip install medseg[onnx]``): importing this
package does not import them.
"""

from medseg.export.onnx import (
    ExportSpec,
    OnnxExport,
    ParityError,
    ParityReport,
    check_parity,
    export_onnx,
    export_spec,
)
from medseg.export.runtime import load_onnx_model, load_predictor

__all__ = [
    "ExportSpec",
    "OnnxExport",
    "ParityError",
    "ParityReport",
    "check_parity",
    "export_onnx",
    "export_spec",
    "load_onnx_model",
    "load_predictor",
]
