"""An exported model (digitnet.export) run by onnxruntime, without torch: predict and serve start in a fraction of the
time, and a deployment needs neither torch nor digitnet's training stack.

The graph takes float32 images x/255, (N, 1, 28, 28), and returns the 10 class probabilities: the pixel scaling, the
test-time augmentation and the ensemble mean are inside it. Its metadata (key METADATA_KEY) says what it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from digitnet.errors import UserError, shown

METADATA_KEY = "digitnet"
INPUT, OUTPUT = "images", "probabilities"


class OnnxModel:
    """predict_proba(x) -> (N, 10) probabilities; `hparams` as a checkpoint's model has them (arch, scaling, tta,
    members, parameters); `notes` for the user, as load_model gives."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            import onnxruntime
        except ImportError:
            raise UserError('running an ONNX model needs onnxruntime: pip install "digitnet[onnx]"') from None
        if not self.path.is_file():
            what = "not a file" if self.path.exists() else "no such file"
            raise UserError(f"{shown(self.path)}: {what}; pass a model exported by digitnet-export", path=self.path)
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors for a bad file have no public types
            raise UserError(
                f"{shown(self.path)}: onnxruntime cannot load it ({type(exc).__name__}); the file is "
                "damaged or not an ONNX model (export one with digitnet-export)",
                path=self.path,
            ) from None
        metadata = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        try:
            self.hparams = json.loads(metadata)
            assert isinstance(self.hparams, dict) and isinstance(self.hparams.get("arch"), str)
            assert [(i.name, i.type, i.shape[1:]) for i in inputs] == [(INPUT, "tensor(float)", [1, 28, 28])]
            assert [(o.name, o.shape[1:]) for o in outputs] == [(OUTPUT, [10])]
        except (TypeError, ValueError, AssertionError):
            raise UserError(
                f"{shown(self.path)} is an ONNX model, but not one digitnet-export wrote (no digitnet "
                f"metadata, or not images (N, 1, 28, 28) in and {OUTPUT} (N, 10) out); export the model "
                "with digitnet-export",
                path=self.path,
            ) from None
        self.notes: list[str] = []

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]
