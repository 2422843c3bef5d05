"""`python -m digitnet.export MODEL OUT.onnx` (`digitnet-export`): a checkpoint, or a CV run's fold ensemble, as one
ONNX graph that predict, serve or any ONNX runtime can run without torch.

The graph holds everything evaluate applies: the pixel scaling, the test-time augmentation and the ensemble mean.
Input `images`: float32 x/255, (N, 1, 28, 28), N free; output `probabilities`: (N, 10). Before the file is written,
onnxruntime runs the graph on a batch of 1 and of 64 images and must agree with torch within PARITY."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from digitnet.errors import UserError, named, reported, run_console, shown
from digitnet.layout import check_writable_file

PROG = "digitnet.export"
PARITY = 1e-4  # the largest difference in any probability between torch and onnxruntime
OPSET = 18  # torch's exporter's own default


def parse_args(argv=None) -> argparse.Namespace:
    description = __doc__.split("\n\n")[0].split(": ", 1)[1].replace("\n", " ")  # the first paragraph, whole
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=description)
    parser.add_argument(
        "model", metavar="MODEL", help="a checkpoint, a task=final run dir, or a CV run dir (the ensemble of its folds)"
    )
    parser.add_argument("out", metavar="OUT.onnx", type=Path, help="the ONNX file to write")
    parser.add_argument(
        "--tta",
        choices=("none", "shift"),
        help="test-time augmentation built into the graph; default: what each checkpoint's run used",
    )
    args = parser.parse_args(argv)
    if args.out.suffix != ".onnx":
        parser.error(f"OUT {shown(args.out)}: give a path ending in .onnx")
    return args


class Probabilities(torch.nn.Module):
    """softmax of the model's output: of logits (a checkpoint), or of the log of averaged probabilities (TTA, an
    ensemble), which gives those probabilities back."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def export(model, out: Path) -> dict:
    """Write `model` (a net returning logits or log-probabilities) as an ONNX graph of probabilities into `out`,
    checked against torch first. Returns the metadata written into it."""
    import numpy as np
    import onnx

    from digitnet.core.nets import count_parameters
    from digitnet.core.onnxmodel import INPUT, METADATA_KEY, OUTPUT, OnnxModel

    graph = Probabilities(model).eval()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        torch.onnx.export(
            graph,
            (torch.rand(3, 1, 28, 28),),
            tmp,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        names = [Path(n).name for n in getattr(model, "names", [])]
        metadata = {
            **{k: v for k, v in model.hparams.items() if k in ("arch", "scaling", "tta", "pixel_mean", "pixel_std")},
            "members": names,
            "parameters": count_parameters(model),
        }
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
        onnx.save(proto, tmp)
        loaded = OnnxModel(tmp)
        x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected = graph(x).numpy()
        try:
            worst = max(
                float(np.abs(loaded.predict_proba(x[:1].numpy()) - expected[:1]).max()),
                float(np.abs(loaded.predict_proba(x.numpy()) - expected).max()),
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no public types
            raise UserError(
                f"the exported graph does not run in onnxruntime at batch 1 and 64 ({named(exc)}); nothing was "
                "written. Please report it"
            ) from None
        if not worst <= PARITY:
            raise UserError(
                f"the exported graph's probabilities differ from torch's by {worst:.2g} (more than "
                f"{PARITY:g}); nothing was written. Please report it, with the model"
            )
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return metadata


def main(argv=None) -> int:
    args = parse_args(argv)
    with reported(PROG):
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401 - torch's exporter needs it
        except ImportError:
            raise UserError('exporting needs onnx, onnxscript and onnxruntime: pip install "digitnet[onnx]"') from None
        check_writable_file(args.out, "OUT")
        args.out.parent.mkdir(parents=True, exist_ok=True)  # its folder, made now: the work ends in a write there
        from digitnet.core.checkpoints import load_model
        from digitnet.logs import quiet

        model = load_model([args.model], args.tta).float().eval()
        quiet()  # after the checks of MODEL: Lightning's import is seconds
        for note in model.notes:
            print(f"note: {note}", file=sys.stderr)
        if args.out.exists():
            print(f"note: replacing {shown(args.out)}", file=sys.stderr)
        metadata = export(model, args.out)
    members = f", {len(metadata['members'])} members" if metadata["members"] else ""
    print(f"digitnet: exported {metadata['arch']} (tta={metadata['tta']}{members}) to {args.out}")
    return 0


def cli() -> None:
    """Console script `digitnet-export`."""
    run_console(main)


if __name__ == "__main__":
    cli()
