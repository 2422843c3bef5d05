"""`python -m digitnet.evaluate CHECKPOINT`: re-score a checkpoint on the 10k MNIST holdout.

The net and its pixel scaling come from the checkpoint's own hparams, never from the current config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from digitnet.errors import UserError, exit_on_user_error
from digitnet.files import check_writable_file

PROG = "digitnet.evaluate"


def main(argv=None) -> int:
    from digitnet.data import default_root

    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", default=default_root(), help="folder with the MNIST files (default: $DIGITNET_DATA or ./data)")
    parser.add_argument("--no-download", action="store_true", help="fail instead of fetching missing MNIST files")
    parser.add_argument("--out", type=Path, help="also write the metrics (and confusion_matrix.png) beside this JSON path")
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args(argv)
    with exit_on_user_error(PROG):
        if args.batch_size < 1:
            raise UserError(f"--batch-size {args.batch_size}: must be a positive whole number (default 1000)")
        if args.out:
            check_writable_file(args.out, "--out")
        from digitnet import report
        from digitnet.data import load_mnist
        from digitnet.nets import load_checkpoint

        model = load_checkpoint(args.checkpoint)
        arrays = load_mnist(args.data_root, download=not args.no_download, holdout_only=True)
        metrics = report.holdout_metrics(model, arrays.test_x, arrays.test_y, args.batch_size)
        arch = model.hparams["arch"]
        metrics.update(checkpoint=str(args.checkpoint), model=arch, scaling=model.hparams.get("scaling", "normalize"))
        if args.out:
            report.write_json_atomic(args.out, metrics)
            figure = report.confusion_figure(metrics["confusion_matrix"], f"{arch}: holdout")
            report.save(figure, args.out.with_name("confusion_matrix.png"))
    print(f"> {100 * metrics['accuracy']:.3f}")
    print(f"holdout loss={metrics['loss']:.4f} n={metrics['n']} model={metrics['model']} scaling={metrics['scaling']}")
    print("per-class accuracy: " + " ".join(f"{d}:{100 * a:.2f}" for d, a in metrics["per_class_accuracy"].items()))
    return 0


def cli() -> None:
    """Console script `digitnet-evaluate`."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
