"""`python -m digitnet.predict CHECKPOINT IMAGE_OR_DIR...`: the digit in each image, with its probability."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from digitnet.errors import UserError, exit_on_user_error
from digitnet.images import ImageProblem, as_is, expand_paths, mnist_form, open_gray

PROG = "digitnet.predict"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split(": ", 1)[1])
    parser.add_argument("checkpoint", help="a final.ckpt written by `python -m digitnet.train task=final`")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF, TIFF) or folders of them")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of tab-separated lines")
    parser.add_argument("--top-k", type=int, default=1, metavar="N", help="also list the N most likely digits")
    parser.add_argument(
        "--no-preprocess", action="store_true", help="feed 28x28 MNIST-style images unchanged (the tutorial's way)"
    )
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= 10:
        parser.error(f"--top-k {args.top_k}: choose 1 to 10")
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be at least 1")
    return args


def prepare(paths, preprocess: bool):
    """(good paths, their 28x28 arrays, [(path, reason)] for the rest)."""
    good, arrays, failed = [], [], []
    for path in paths:
        try:
            gray = open_gray(path)
            arrays.append(mnist_form(gray) if preprocess else as_is(gray))
            good.append(path)
        except ImageProblem as exc:
            failed.append((path, str(exc)))
        except Exception as exc:  # noqa: BLE001 - whatever breaks on one image is that image's error alone
            first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            failed.append((path, f"cannot be prepared ({type(exc).__name__}{': ' + first if first else ''})"))
    return good, arrays, failed


@torch.inference_mode()
def classify(model, arrays: list[np.ndarray], batch_size: int) -> torch.Tensor:
    """Softmax probabilities, (N, 10), computed in batches."""
    probs = []
    for i in range(0, len(arrays), batch_size):
        x = torch.from_numpy(np.stack(arrays[i : i + batch_size]))[:, None]
        probs.append(torch.softmax(model(x), dim=1))
    return torch.cat(probs) if probs else torch.empty(0, 10)


def main(argv=None) -> int:
    args = parse_args(argv)
    with exit_on_user_error(PROG):
        from digitnet.nets import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        paths = expand_paths(args.images)
        if not paths:
            raise UserError(f"no image files found in {' '.join(args.images)}")
    good, arrays, failed = prepare(paths, preprocess=not args.no_preprocess)
    probs = classify(model, arrays, args.batch_size)
    top_p, top_d = probs.topk(max(args.top_k, 1), dim=1)
    finite = torch.isfinite(probs).all(dim=1).tolist()
    rows = []
    for path, ps, ds, ok in zip(good, top_p.tolist(), top_d.tolist(), finite):
        if not ok:  # never NaN in the output: JSON has no NaN
            failed.append((path, "the model gave no finite probabilities for it"))
            continue
        rows.append(
            {
                "path": str(path),
                "digit": ds[0],
                "probability": round(ps[0], 6),
                "top": [{"digit": d, "probability": round(p, 6)} for d, p in zip(ds, ps)],
            }
        )
    if args.json:
        json.dump(rows, sys.stdout, indent=1, allow_nan=False)
        print()
    else:
        for r in rows:
            extra = "".join(f"\t{t['digit']}:{t['probability']:.4f}" for t in r["top"][1:])
            print(f"{r['path']}\t{r['digit']}\t{r['probability']:.4f}{extra}")
    sys.stdout.flush()
    for path, reason in failed:
        print(f"{PROG}: error: {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def cli() -> None:
    """Console script `digitnet-predict`."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
