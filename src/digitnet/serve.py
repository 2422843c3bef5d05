"""`python -m digitnet.serve MODEL` (`digitnet-serve`): draw a digit in the browser, or send images over HTTP, and
see what the model reads. MODEL is a checkpoint, a task=final run dir, a CV run dir (the ensemble of its folds) or an
exported .onnx model.
The app itself: digitnet/web/app.py."""

from __future__ import annotations

import argparse
import socket
import sys

from digitnet.errors import UserError, reported, run_console

PROG = "digitnet.serve"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.split(": ", 1)[1].split("\n")[0])
    parser.add_argument(
        "model",
        help="a checkpoint (final.ckpt), a task=final run dir, a CV run dir, or an .onnx "
        "model (digitnet-export; run without torch)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--tta", choices=("none", "shift"), help="test-time augmentation; default: what the checkpoint's run used"
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: choose 0-65535 (0: any free port, printed at start)")
    if not args.host.strip():  # the socket would bind every interface
        parser.error("--host is empty; give an address (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    with reported(PROG):
        try:
            import uvicorn

            from digitnet.web.app import create_app, find_checkpoint
        except ImportError:
            raise UserError('the web app needs FastAPI and uvicorn: pip install "digitnet[serve]"') from None
        app = create_app(find_checkpoint(args.model), args.tta)
        # Bound here, before the server starts, so that a busy port is one line, and port 0 names the port it got.
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
        # every kept-alive request waited 40 ms (Nagle against the client's delayed ACK).
        sock = socket.socket(
            socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((args.host, args.port))
        except OSError as exc:
            sock.close()
            raise UserError(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror}); choose another --port or --host"
            ) from None
        print(
            f"digitnet: serving {args.model} at http://{args.host}:{sock.getsockname()[1]}/ (API docs: /docs; "
            "Ctrl-C stops)",
            flush=True,
        )
        try:
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # Ctrl-C is how it stops
        print("digitnet: stopped", file=sys.stderr)
    return 0


def cli() -> None:
    """Console script `digitnet-serve`."""
    run_console(main)


if __name__ == "__main__":
    cli()
