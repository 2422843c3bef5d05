"""`python -m digitnet.summarize SWEEP_DIR`: rebuild a sweep's summary, also of unfinished sweeps."""

from __future__ import annotations

import sys
from pathlib import Path

from digitnet.errors import UserError, argument_parser, exit_on_user_error

PROG = "digitnet.summarize"


def main(argv=None) -> int:
    parser = argument_parser(PROG, __doc__.split(": ", 1)[1])
    parser.add_argument("sweep_dir", help="a multirun dir (holds 0/, 1/, ... job dirs)")
    args = parser.parse_args(argv)
    with exit_on_user_error(PROG):
        if not args.sweep_dir.strip():  # Path("") is the working dir: the summary would land there
            raise UserError("the sweep dir is empty; pass the dir a `-m` run printed")
        sweep_dir = Path(args.sweep_dir)
        if sweep_dir.exists() and not sweep_dir.is_dir():
            raise UserError(f"{sweep_dir} is a file, not a folder; pass the dir a `-m` run printed")
        if not sweep_dir.is_dir():
            raise UserError(f"{sweep_dir}: no such folder; pass the dir a `-m` run printed")
        if (sweep_dir / "multirun.yaml").exists() and not (sweep_dir / "multirun.yaml").is_file():
            raise UserError(f"{sweep_dir / 'multirun.yaml'} is not a file (Hydra writes its sweep's config there); "
                            "remove it, or pass the dir a `-m` run printed")
        if not (sweep_dir / "multirun.yaml").is_file():  # Hydra writes it as a sweep starts
            hint = " (it holds run dirs)" if list(sweep_dir.glob("*/.hydra/overrides.yaml")) else ""
            raise UserError(f"{sweep_dir} has no multirun.yaml, so it is no sweep dir{hint}; pass the dir a `-m` run "
                            "printed (outputs/multirun/DATE/TIME by default)")
        if not list(sweep_dir.glob("*/.hydra/overrides.yaml")):
            raise UserError(f"{sweep_dir}: holds no Hydra job dirs (*/.hydra/overrides.yaml); is it a sweep dir?")
        from digitnet.sweep import summarize

        summarize(sweep_dir)
    return 0


def cli() -> None:
    """Console script `digitnet-summarize`."""
    from digitnet.errors import run_console

    run_console(main)


if __name__ == "__main__":
    cli()
