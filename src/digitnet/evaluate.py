"""`python -m digitnet.evaluate MODEL`: score a checkpoint, or a CV run's fold models and their ensemble, on the
holdout.

MODEL is a checkpoint, a task=final run dir, or a CV run dir: then each fold model (folds/fold_K.ckpt) and their
ensemble (the mean of their softmax probabilities) are scored, one table row each, and the ensemble's report goes
into the run dir (ensemble_metrics.json, ensemble_confusion_matrix.png). Nets and pixel scaling come from the
checkpoints' own hparams, never from the current config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from digitnet import layout, startup
from digitnet.errors import UserError, reported, run_console, shown
from digitnet.layout import check_writable_file, run_file_in

PROG = "digitnet.evaluate"


def parse_args(argv=None) -> argparse.Namespace:
    from digitnet.core.data import default_root

    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("checkpoint", metavar="MODEL", help="a checkpoint, a task=final run dir, or a CV run dir")
    parser.add_argument(
        "--data-root", default=default_root(), help="folder with the MNIST files (default: $DIGITNET_DATA or ./data)"
    )
    parser.add_argument("--no-download", action="store_true", help="fail instead of fetching missing MNIST files")
    parser.add_argument(
        "--out", type=Path, help="also write the metrics to this .json, and its confusion matrix beside it (NAME.png)"
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--tta", choices=("none", "shift"), help="test-time augmentation; default: what each checkpoint's run used"
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be at least 1")
    return args


def outputs(args, model) -> tuple[Path, Path] | tuple[None, None]:
    """Where the metrics and their figure go: --out FILE.json and FILE.png beside it, or a CV run's ensemble report
    in its run dir. Never a run's own files; never the figure of another --out."""
    from digitnet.core.nets import Ensemble

    if args.out:
        run = run_file_in(args.out.parent)
        if args.out.suffix != ".json" or run:
            raise UserError(
                f"--out {shown(args.out)}: "
                + (
                    f"{shown(args.out.parent)} is a run dir (it holds {run}), "
                    "whose reports this would replace; choose a path outside run dirs"
                    if run
                    else "give a .json path (the figure goes beside it, with .png)"
                ),
                path=args.out,
            )
        return args.out, args.out.with_suffix(".png")
    run_report = isinstance(model, Ensemble) and model.hparams["tta"] == model.own_tta
    if isinstance(model, Ensemble) and not run_report:
        print(
            f"note: --tta {args.tta} is not how this run scores ({model.own_tta}): its ensemble_metrics.json is "
            "left as it is; add --out FILE.json to keep these figures",
            file=sys.stderr,
        )
    if not run_report:
        return None, None
    return Path(args.checkpoint) / layout.ENSEMBLE_METRICS, Path(args.checkpoint) / layout.ENSEMBLE_FIGURE


def score(args) -> dict:
    from digitnet.core.checkpoints import load_model
    from digitnet.core.data import OPTION_SETTINGS, load_mnist
    from digitnet.core.nets import Ensemble

    model = load_model([args.checkpoint], args.tta)
    from digitnet.report import figures, results  # after the checks of MODEL: torchmetrics' import is seconds

    startup.imports_done()

    for note in model.notes:
        print(f"note: {note}", file=sys.stderr)
    out, figure = outputs(args, model)
    for path in (out, figure) if out else ():
        check_writable_file(path, "the metrics file" if path == out else "the confusion-matrix figure")
        if path.exists():  # another evaluation's: said, not silently replaced
            print(f"note: replacing {shown(path)}", file=sys.stderr)
    arrays = load_mnist(args.data_root, download=not args.no_download, holdout_only=True, settings=OPTION_SETTINGS)
    metrics = results.holdout_metrics(model, arrays.test_x, arrays.test_y, args.batch_size)
    metrics.update(
        checkpoint=str(args.checkpoint),
        model=model.hparams["arch"],
        scaling=model.hparams.get("scaling", "normalize"),
        tta=model.hparams.get("tta", "none"),
    )
    if isinstance(model, Ensemble):
        metrics["members"] = {}
        print(f"{'model':<40} {'holdout acc %':>13} {'loss':>8}")
        for name, member in zip(model.names, model.members):
            m = results.holdout_metrics(member, arrays.test_x, arrays.test_y, args.batch_size)
            metrics["members"][name] = {"accuracy": m["accuracy"], "loss": m["loss"]}
            print(
                f"{name if len(name) <= 40 else '...' + name[-37:]:<40} {100 * m['accuracy']:>13.3f} {m['loss']:>8.4f}"
            )
        print(f"{'ensemble (mean of softmax)':<40} {100 * metrics['accuracy']:>13.3f} {metrics['loss']:>8.4f}")
    if out:  # the figure first: the JSON, written last, says the pair is complete
        out.parent.mkdir(parents=True, exist_ok=True)
        tta = f", tta={metrics['tta']}" if metrics["tta"] != "none" else ""
        figures.save(figures.confusion_figure(metrics["confusion_matrix"], f"{metrics['model']}{tta}: holdout"), figure)
        results.write_json_atomic(out, metrics)
    return metrics


def main(argv=None) -> int:
    args = parse_args(argv)
    with reported(PROG):
        metrics = score(args)
    print(f"> {100 * metrics['accuracy']:.3f}")
    print(
        f"holdout loss={metrics['loss']:.4f} n={metrics['n']} model={metrics['model']} scaling={metrics['scaling']} "
        f"tta={metrics['tta']}"
    )
    per_class = metrics["per_class_accuracy"].items()
    print("per-class accuracy: " + " ".join(f"{d}:{'n/a' if a is None else f'{100 * a:.2f}'}" for d, a in per_class))
    return 0


def cli() -> None:
    """Console script `digitnet-evaluate`."""
    startup.start_process()
    run_console(main)


if __name__ == "__main__":
    cli()
