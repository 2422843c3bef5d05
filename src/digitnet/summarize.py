"""`python -m digitnet.summarize SWEEP_DIR` (`digitnet-summarize`): rebuild a sweep's summary, also of an unfinished
or interrupted sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from digitnet import layout
from digitnet.errors import UserError, reported, run_console, shown

PROG = "digitnet.summarize"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split(": ", 1)[1])
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir (holds multirun.yaml and job dirs 0/, 1/, ...)")
    args = parser.parse_args(argv)
    with reported(PROG):
        if not args.sweep_dir.exists():
            raise UserError(f"{shown(args.sweep_dir)} does not exist; pass a sweep dir", path=args.sweep_dir)
        if not (args.sweep_dir / layout.MULTIRUN).is_file():  # Hydra writes it as a sweep starts
            raise UserError(
                f"{shown(args.sweep_dir)} has no multirun.yaml, so it is no sweep dir; pass the dir a `-m` "
                "run printed (outputs/multirun/DATE/TIME by default)",
                path=args.sweep_dir,
            )
        from digitnet.report.sweep_table import summarize

        summarize(args.sweep_dir)
    return 0


def cli() -> None:
    """Console script `digitnet-summarize`."""
    run_console(main)


if __name__ == "__main__":
    cli()
