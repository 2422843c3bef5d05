"""`python -m digitnet.predict CHECKPOINT IMAGE_OR_DIR...`: the digit in each image, with its probability."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

from digitnet import startup
from digitnet.errors import UserError, reported, run_console, shown
from digitnet.layout import run_file_in

PROG = "digitnet.predict"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split(": ", 1)[1])
    parser.add_argument(
        "checkpoint",
        metavar="MODEL",
        help="a checkpoint (final.ckpt), a task=final run dir, a CV "
        "run dir (the ensemble of its folds), or an exported .onnx model (run without torch)",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (PNG, JPEG, BMP, GIF, TIFF) or folders "
        "of them; leading .ckpt files join MODEL in an ensemble",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of tab-separated lines")
    parser.add_argument("--top-k", type=int, default=1, metavar="N", help="also list the N most likely digits")
    parser.add_argument(
        "--no-preprocess", action="store_true", help="feed 28x28 MNIST-style images unchanged (the tutorial's way)"
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument(
        "--tta", choices=("none", "shift"), help="test-time augmentation; default: what each checkpoint's run used"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= 10:
        parser.error(f"--top-k {args.top_k}: choose 1 to 10")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be at least 1")
    return args


@contextmanager
def _empty_json_list_on_error(as_json: bool):
    """--json: stdout is valid JSON even when nothing could be predicted (no model, no images): `[]`."""
    try:
        yield
    except SystemExit:
        if as_json:
            print("[]", flush=True)
        raise


def check_image_args(images: list[str]) -> None:
    """Models come first; what follows is images. A checkpoint or a run dir among them would be read as images (its
    figures "predicted") or silently join the ensemble."""
    if not images:
        raise UserError("no images given after the models; name image files or folders")
    for arg in images:
        if not arg.strip():  # Path("") is the working dir: every image under it would be predicted
            raise UserError("an image path is empty ('' among the images); name image files or folders")
        if arg.endswith((".ckpt", ".onnx")):
            raise UserError(f"{arg}: models come first; put it before the images (MODEL [MORE.ckpt ...] IMAGE ...)")
        held = run_file_in(Path(arg))
        if held:
            raise UserError(
                f"{arg} is a run dir (it holds {held}), not a folder of images; to add its model to the "
                "ensemble, pass its .ckpt files before the images"
            )


def main(argv=None) -> int:
    args = parse_args(argv)
    with _empty_json_list_on_error(args.json), reported(PROG):
        from digitnet.core.images import expand_paths
        from digitnet.core.inference import load_predictor, predict_images

        more = []
        while args.images and args.images[0].endswith((".ckpt", ".onnx")):
            more.append(args.images.pop(0))
        model_like = args.checkpoint.endswith((".ckpt", ".onnx")) or Path(args.checkpoint).is_dir()
        if more and not args.images and not model_like:
            raise UserError(
                f"no images after the models: {args.checkpoint} was read as the model; the model comes "
                f"first ({' '.join(more)} {args.checkpoint})"
            )
        check_image_args(args.images)
        model = load_predictor([args.checkpoint, *more], args.tta)  # several: the mean of their softmax probabilities
        startup.imports_done()
        for note in model.notes:
            print(f"note: {note}", file=sys.stderr)
        skipped: list[Path] = []
        empty: list[Path] = []
        paths = expand_paths(args.images, skipped, empty)
        if empty and paths:  # a folder given that holds no image (the folds/ of a run, say): not silently nothing
            print(f"note: no image files in {', '.join(shown(p) for p in empty)}; left out", file=sys.stderr)
        if skipped:
            print(
                f"note: left out {len(skipped)} run dir(s) inside the folders given ({shown(skipped[0])}"
                f"{', ...' if len(skipped) > 1 else ''}): their figures are no digits",
                file=sys.stderr,
            )
        if not paths:
            raise UserError(f"no image files found in {' '.join(args.images)}")
    rows, _, failed = predict_images(
        model, [(p, p) for p in paths], not args.no_preprocess, args.top_k, args.batch_size
    )
    if args.json:
        json.dump(rows, sys.stdout, indent=1, allow_nan=False)
        print()
    else:
        for r in rows:
            extra = "".join(f"\t{t['digit']}:{t['probability']:.4f}" for t in r["top"][1:])
            print(f"{shown(r['path'])}\t{r['digit']}\t{r['probability']:.4f}{extra}")
    sys.stdout.flush()
    for r in rows:  # what the user should know of a reading: an unsure one, a page cut out of its surround
        for note in r["notes"] + ([f"unsure reading (p {r['probability']:.2f})"] if r["unsure"] else []):
            print(f"note: {shown(r['path'])}: {note}", file=sys.stderr)
    for path, reason in failed:
        print(f"{PROG}: error: {shown(path)}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def cli() -> None:
    """Console script `digitnet-predict`."""
    startup.start_process()
    run_console(main)


if __name__ == "__main__":
    cli()
