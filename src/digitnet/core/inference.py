"""Predicting the digits in people's images: each image prepared alone (one that cannot be read is that image's
problem), all predicted in batches. `predict` prints these rows; `serve` answers with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitnet.core.images import ImageProblem, as_is, mnist_form, open_gray
from digitnet.errors import UserError, named

# Below this probability a reading is flagged as unsure: the net is torn between digits, or the image is no digit.
UNSURE = 0.7


def prepare_one(source, preprocess: bool = True, notes: list | None = None) -> np.ndarray:
    """One image (a path or a file object) -> its 28x28 array, or ImageProblem with a one-line reason. Whatever else
    breaks on one image is that image's problem alone."""
    try:
        gray = open_gray(source)
        return mnist_form(gray, notes) if preprocess else as_is(gray)
    except ImageProblem:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ImageProblem(f"cannot be prepared ({named(exc, 120)})", "damaged") from None


def load_predictor(sources: list[str], tta: str | None = None):
    """What predict and serve run: one exported .onnx model (onnxruntime; torch is never imported), or checkpoints
    and run dirs (core.checkpoints.load_model: one model, or the ensemble of several)."""
    onnx = [s for s in sources if Path(s).suffix.lower() == ".onnx"]
    if not onnx:
        from digitnet.core.checkpoints import load_model

        return load_model(sources, tta)
    from digitnet.core.onnxmodel import OnnxModel

    if len(sources) > 1:
        raise UserError(
            f"{onnx[0]} is an ONNX model, which runs alone; to export an ensemble, pass a CV run dir to "
            "digitnet-export",
            path=Path(onnx[0]),
        )
    model = OnnxModel(onnx[0])
    if tta and tta != model.hparams.get("tta"):
        raise UserError(
            f"--tta {tta}: {onnx[0]} applies tta={model.hparams.get('tta')} in its graph; export the "
            f"model again with --tta {tta}",
            key="tta",
            value=tta,
            path=Path(onnx[0]),
        )
    return model


def classify(model, arrays: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Softmax probabilities, (N, 10), computed in batches by a torch model or an OnnxModel."""
    run = model.predict_proba if hasattr(model, "predict_proba") else _torch_probabilities(model)
    probs = [run(np.stack(arrays[i : i + batch_size])[:, None]) for i in range(0, len(arrays), batch_size)]
    return np.concatenate(probs) if probs else np.empty((0, 10), np.float32)


def _torch_probabilities(model):
    import torch

    @torch.inference_mode()
    def run(x: np.ndarray) -> np.ndarray:
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()

    return run


def predict_images(model, items, preprocess: bool = True, top_k: int = 1, batch_size: int = 512):
    """[(name, path or file object)] -> (rows, the rows' 28x28 arrays and probabilities, [(name, reason)]).

    A row is what `--json` prints: {"path", "digit", "probability", "top": [{"digit", "probability"}, ...],
    "unsure": probability under UNSURE, "notes": what preprocessing found}. digitnet.serve answers with the same
    rows, computed here."""
    names, arrays, failed, notes = [], [], [], []
    for name, source in items:
        try:
            found: list = []
            arrays.append(prepare_one(source, preprocess, found))
            names.append(name)
            notes.append(found)
        except ImageProblem as exc:
            failed.append((name, str(exc)))
    probs = classify(model, arrays, batch_size)
    top_d = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    top_p = np.take_along_axis(probs, top_d, axis=1)
    finite = np.isfinite(probs).all(axis=1).tolist()
    rows, extras = [], []
    for name, array, p, ps, ds, ok, found in zip(
        names, arrays, probs.tolist(), top_p.tolist(), top_d.tolist(), finite, notes
    ):
        if not ok:  # never NaN in the output: JSON has no NaN
            failed.append((name, "the model gave no finite probabilities for it"))
            continue
        rows.append(
            {
                "path": str(name),
                "digit": ds[0],
                "probability": round(ps[0], 6),
                "top": [{"digit": d, "probability": round(q, 6)} for d, q in zip(ds, ps)],
                "unsure": ps[0] < UNSURE,
                "notes": found,
            }
        )
        extras.append((array, [round(q, 6) for q in p]))
    return rows, extras, failed
