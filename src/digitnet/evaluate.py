"""`python -m digitnet.evaluate MODEL`: score a checkpoint, or a CV run's fold models and their ensemble, on the holdout.

MODEL is a checkpoint, a task=final run dir, or a CV run dir: then each fold model (folds/fold_K.ckpt) and their
ensemble (the mean of their softmax probabilities) are scored, one table row each, and the ensemble's report goes
into the run dir (ensemble_metrics.json, ensemble_confusion_matrix.png). Nets and pixel scaling come from the
checkpoints' own hparams, never from the current config.
"""

from __future__ import annotations

import sys
from pathlib import Path

from digitnet.errors import UserError, argument_parser, exit_on_user_error, shown
from digitnet.files import check_writable_file, run_file_in

PROG = "digitnet.evaluate"


def check_out(out: Path) -> None:
    """--out is a new JSON of this evaluation: never a run's own file (its test_metrics.json, its checkpoint), whose
    figures and scores would then describe another model."""
    check_writable_file(out, "--out")
    if out.suffix != ".json":
        raise UserError(f"--out {out}: give a .json path (the confusion-matrix figure goes beside it)")
    run = run_file_in(out.parent)
    if run:
        raise UserError(f"--out {out}: {out.parent} is a run dir (it holds {run}), whose own reports this would "
                        "replace; choose a path outside run dirs")


def main(argv=None) -> int:
    from digitnet.plan import default_data_root as default_root

    parser = argument_parser(PROG, __doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("checkpoint", metavar="MODEL", help="a checkpoint, a task=final run dir, or a CV run dir")
    parser.add_argument("--data-root", default=default_root(), help="folder with the MNIST files (default: $DIGITNET_DATA or ./data)")
    parser.add_argument("--no-download", action="store_true", help="fail instead of fetching missing MNIST files")
    parser.add_argument("--out", type=Path, help="also write the metrics (and confusion_matrix.png) beside this JSON path")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--tta", choices=("none", "shift"), help="test-time augmentation (nets.TTAS); default: what "
                        "each checkpoint's run used (its tta=...)")
    args = parser.parse_args(argv)
    with exit_on_user_error(PROG):
        if args.batch_size < 1:
            raise UserError(f"--batch-size {args.batch_size}: must be a positive whole number (default 1000)")
        if args.out:
            check_out(args.out)
        from digitnet import report
        from digitnet.data import OPTION_SETTINGS, load_mnist
        from digitnet.nets import Ensemble, load_model

        model = load_model([args.checkpoint], args.tta)
        for note in model.notes:
            print(f"note: {note}", file=sys.stderr)
        run_report = isinstance(model, Ensemble) and model.hparams["tta"] == model.own_tta
        if isinstance(model, Ensemble) and not run_report and not args.out:
            print(f"note: --tta {args.tta} is not how this run scores ({model.own_tta}): its ensemble_metrics.json is "
                  "left as it is; add --out FILE.json to keep these figures", file=sys.stderr)
        out = args.out or (Path(args.checkpoint) / "ensemble_metrics.json" if run_report else None)
        figure_path = out and out.with_name("ensemble_confusion_matrix.png" if isinstance(model, Ensemble)
                                            else "confusion_matrix.png")
        if out:  # both files writable before the work: a refusal after it would leave a new JSON by an old figure
            check_writable_file(out, "the metrics file")
            check_writable_file(figure_path, "the confusion-matrix figure")
        arrays = load_mnist(args.data_root, download=not args.no_download, holdout_only=True, settings=OPTION_SETTINGS)
        try:
            metrics = report.holdout_metrics(model, arrays.test_x, arrays.test_y, args.batch_size)
        except UserError as exc:
            raise UserError(f"{shown(args.checkpoint)}: {exc}") from None
        arch = model.hparams["arch"]
        metrics.update(checkpoint=str(args.checkpoint), model=arch, scaling=model.hparams.get("scaling", "normalize"),
                       tta=model.hparams.get("tta", "none"))
        if isinstance(model, Ensemble):
            metrics["members"] = {}
            print(f"{'model':<40} {'holdout acc %':>13} {'loss':>8}")
            for name, member in zip(model.names, model.members):
                m = report.holdout_metrics(member, arrays.test_x, arrays.test_y, args.batch_size)
                metrics["members"][name] = {"accuracy": m["accuracy"], "loss": m["loss"]}
                label = name if len(name) <= 40 else "..." + name[-37:]  # the tail names the fold
                print(f"{label:<40} {100 * m['accuracy']:>13.3f} {m['loss']:>8.4f}")
            print(f"{'ensemble (mean of softmax)':<40} {100 * metrics['accuracy']:>13.3f} {metrics['loss']:>8.4f}")
        if out:  # the figure first: the JSON, written last, says the pair is complete
            out.parent.mkdir(parents=True, exist_ok=True)
            tta = f", tta={metrics['tta']}" if metrics["tta"] != "none" else ""
            figure = report.confusion_figure(metrics["confusion_matrix"], f"{arch}{tta}: holdout")
            report.save(figure, figure_path)
            report.write_json_atomic(out, metrics)
    print(f"> {100 * metrics['accuracy']:.3f}")
    print(f"holdout loss={metrics['loss']:.4f} n={metrics['n']} model={metrics['model']} scaling={metrics['scaling']} "
          f"tta={metrics['tta']}")
    print("per-class accuracy: " + " ".join(f"{d}:{100 * a:.2f}" for d, a in metrics["per_class_accuracy"].items()))
    return 0


def cli() -> None:
    """Console script `digitnet-evaluate`."""
    from digitnet.errors import run_console

    run_console(main)


if __name__ == "__main__":
    cli()
