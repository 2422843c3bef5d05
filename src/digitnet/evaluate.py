"""`python -m digitnet.evaluate MODEL`: score a checkpoint, or a CV run's fold models and their ensemble, on the holdout.

MODEL is a checkpoint, a task=final run dir, or a CV run dir: then each fold model (folds/fold_K.ckpt) and their
ensemble (the mean of their softmax probabilities) are scored, one table row each, and the ensemble's report goes
into the run dir (ensemble_metrics.json, ensemble_confusion_matrix.png). Nets and pixel scaling come from the
checkpoints' own hparams, never from the current config.
"""

from __future__ import annotations

import sys
from pathlib import Path

from digitnet.errors import UserError, argument_parser, exit_on_user_error
from digitnet.files import check_writable_file

PROG = "digitnet.evaluate"


def main(argv=None) -> int:
    from digitnet.plan import default_data_root as default_root

    parser = argument_parser(PROG, __doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("checkpoint", metavar="MODEL", help="a checkpoint, a task=final run dir, or a CV run dir")
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
        from digitnet.nets import Ensemble, load_model

        model = load_model([args.checkpoint])
        arrays = load_mnist(args.data_root, download=not args.no_download, holdout_only=True)
        metrics = report.holdout_metrics(model, arrays.test_x, arrays.test_y, args.batch_size)
        arch = model.hparams["arch"]
        metrics.update(checkpoint=str(args.checkpoint), model=arch, scaling=model.hparams.get("scaling", "normalize"))
        out = args.out
        if isinstance(model, Ensemble):
            metrics["members"] = {}
            print(f"{'model':<40} {'holdout acc %':>13} {'loss':>8}")
            for name, member in zip(model.names, model.members):
                m = report.holdout_metrics(member, arrays.test_x, arrays.test_y, args.batch_size)
                metrics["members"][name] = {"accuracy": m["accuracy"], "loss": m["loss"]}
                print(f"{name[-40:]:<40} {100 * m['accuracy']:>13.3f} {m['loss']:>8.4f}")
            print(f"{'ensemble (mean of softmax)':<40} {100 * metrics['accuracy']:>13.3f} {metrics['loss']:>8.4f}")
            out = out or Path(args.checkpoint) / "ensemble_metrics.json"
        if out:
            report.write_json_atomic(out, metrics)
            figure = report.confusion_figure(metrics["confusion_matrix"], f"{arch}: holdout")
            report.save(figure, out.with_name("ensemble_confusion_matrix.png" if isinstance(model, Ensemble)
                                              else "confusion_matrix.png"))
    print(f"> {100 * metrics['accuracy']:.3f}")
    print(f"holdout loss={metrics['loss']:.4f} n={metrics['n']} model={metrics['model']} scaling={metrics['scaling']}")
    print("per-class accuracy: " + " ".join(f"{d}:{100 * a:.2f}" for d, a in metrics["per_class_accuracy"].items()))
    return 0


def cli() -> None:
    """Console script `digitnet-evaluate`."""
    from digitnet.errors import run_console

    run_console(main)


if __name__ == "__main__":
    cli()
