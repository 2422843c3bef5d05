"""The draw-a-digit web app and HTTP API (FastAPI): the page (digitnet/web/static, served by the app, no CDN),
`POST /api/predict` (multipart field `files`, one or more images; the rows of `digitnet.predict --json`, computed by
the same code, plus each image's 28x28 preview and its ten probabilities), `GET /api/health`, `GET /api/model`, and
FastAPI's OpenAPI docs at /docs.

Uploads are read into memory only (never written to disk), within Starlette's form limits: MAX_FILES per request,
MAX_FILE_BYTES per file; a request over MAX_REQUEST_BYTES is refused whole. Each bad file gets its own error naming
it, and the good files of the same request are still answered.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at run time.
import base64
import io
import json
import logging
import sys
from pathlib import Path

from digitnet import layout

MAX_FILE_BYTES = 10 * 1024 * 1024  # a phone photo is 2-8 MB
MAX_FILES = 32
MAX_REQUEST_BYTES = 64 * 1024 * 1024  # several files near the per-file limit; beyond this the request is refused
WEB = Path(__file__).resolve().parent / "static"


def find_checkpoint(source: str | Path) -> Path:
    """A checkpoint file, a task=final run dir (its final.ckpt), a CV run dir (the ensemble of its folds) or an
    exported .onnx model (checked as it loads)."""
    if Path(source).suffix.lower() != ".onnx":
        from digitnet.core.checkpoints import model_files

        model_files(source)  # refuses a path that names no model
    return Path(source)


def model_info(ckpt: Path, model) -> dict:
    """What the page shows about the model: its net, scaling, size and, where its run dir says, holdout accuracy."""
    ckpt = ckpt / layout.FINAL_CKPT if (ckpt / layout.FINAL_CKPT).is_file() else ckpt
    if "parameters" in model.hparams:  # an ONNX model's metadata; counting a torch model's would import torch
        parameters = model.hparams["parameters"]
    else:
        from digitnet.core.nets import count_parameters

        parameters = count_parameters(model)
    info = {
        "checkpoint": str(ckpt),
        "arch": model.hparams["arch"],
        "scaling": model.hparams.get("scaling", "normalize"),
        "tta": model.hparams.get("tta", "none"),
        "parameters": parameters,
        "holdout_accuracy": None,
    }
    metrics = ckpt / layout.ENSEMBLE_METRICS if ckpt.is_dir() else ckpt.parent / layout.TEST_METRICS
    if not ckpt.is_dir() and ckpt.name != layout.FINAL_CKPT:
        return info  # a loose checkpoint: the test_metrics.json beside it may be another model's
    try:
        recorded = json.loads(metrics.read_text())
        if ckpt.is_dir():  # the score of exactly these members, not of an earlier set of folds
            members = sorted(Path(name).name for name in recorded["members"])
            if members != sorted(Path(name).name for name in model.names):
                return info
        if recorded.get("tta", "none") != info["tta"]:  # scored another way (evaluate --tta with --out elsewhere)
            return info
        info["holdout_accuracy"] = float(recorded["accuracy"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # not a task=final run dir, or no holdout score recorded: shown as unknown
    return info


def preview_png(array) -> str:
    """The 28x28 image the net sees, as a data URL (white ink on black, as MNIST)."""
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255).astype("uint8"), mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def _limited(stream, boundary: str, seen: dict):
    """The body, up to MAX_REQUEST_BYTES; seen["end"] says whether the closing boundary came (a body cut short
    parses without error, minus its unfinished part)."""
    from fastapi import HTTPException

    received, closing, tail = 0, f"--{boundary}--".encode("latin-1", "replace"), b""
    async for chunk in stream:
        received += len(chunk)
        if received > MAX_REQUEST_BYTES:
            raise HTTPException(413, f"request over {MAX_REQUEST_BYTES // 2**20} MB; send fewer or smaller files")
        seen["end"] = seen.get("end") or closing in tail + chunk
        tail = (tail + chunk)[-len(closing) :]
        yield chunk


async def read_form(request):
    """The request's multipart form, read in memory within Starlette's form limits; None if the client left."""
    from fastapi import HTTPException
    from starlette.formparsers import MultiPartException, MultiPartParser
    from starlette.requests import ClientDisconnect

    class InMemoryParser(MultiPartParser):
        spool_max_size = MAX_REQUEST_BYTES  # uploads stay in memory: nothing is written to disk

    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
        raise HTTPException(413, f"request of {int(length) // 2**20} MB is over {MAX_REQUEST_BYTES // 2**20} MB")
    media, _, params = request.headers.get("content-type", "").partition(";")
    boundary = next(
        (p.split("=", 1)[1].strip().strip('"') for p in params.split(";") if p.strip().lower().startswith("boundary=")),
        "",
    )
    if media.strip().lower() != "multipart/form-data" or not boundary:
        raise HTTPException(400, "send images as multipart/form-data (with a boundary) in the field `files`")
    seen: dict = {}
    parser = InMemoryParser(
        request.headers,
        _limited(request.stream(), boundary, seen),
        max_files=MAX_FILES,
        max_fields=16,
        max_part_size=64 * 1024,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:  # Starlette's form limits (MAX_FILES, fields, part size), in its words
        raise HTTPException(400, exc.message) from None
    except ClientDisconnect:
        return None
    if not seen.get("end"):
        await form.close()
        raise HTTPException(
            400,
            "the request ended before its multipart body did (no closing boundary): the upload "
            "was cut off; send the files again",
        )
    return form


async def read_files(form) -> tuple[list, list]:
    """([(name, file object)], [errors]) of the form's `files` parts; each bad part gets its own error."""
    from fastapi import HTTPException

    parts = form.getlist("files")
    if not parts:
        raise HTTPException(400, "no files: send one or more images in the multipart field `files`")
    items, errors = [], []
    for number, upload in enumerate(parts):
        if not hasattr(upload, "filename"):  # the parser reads `filename=` only (not RFC 5987's filename*=)
            errors.append(
                {
                    "file": f"part {number + 1}",
                    "status": 422,
                    "error": "its Content-Disposition has no "
                    'filename= parameter, so it arrived as text, not as a file; send filename="NAME" '
                    "(filename*= alone is not read)",
                }
            )
            continue
        # A name decoded with an odd charset can hold lone surrogates, which JSON cannot carry.
        name = (upload.filename or f"part {number + 1}").encode("utf-8", "backslashreplace").decode("utf-8")
        data = await upload.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            errors.append({"file": name, "error": f"over {MAX_FILE_BYTES // 2**20} MB", "status": 413})
        elif not data:
            errors.append({"file": name, "error": "empty file", "status": 422})
        else:
            items.append((name, io.BytesIO(data)))
    return items, errors


def create_app(ckpt: str | Path, tta: str | None = None):
    """The app, with the model loaded once."""
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    from digitnet.core.inference import load_predictor, predict_images

    # python-multipart logs a bad body's parse error as a bare warning line in the server's log, and raises it;
    # the client gets it as its 400, so the log keeps only uvicorn's access line.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    ckpt = Path(ckpt)
    model = load_predictor([ckpt], tta)  # tta None: what the checkpoint's run used
    for note in model.notes:
        print(f"note: {note}", file=sys.stderr)
    info = model_info(ckpt, model)
    app = FastAPI(
        title="digitnet",
        version="0.1.0",
        description="Predict handwritten digits with a digitnet checkpoint. The page is at /.",
    )
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    app.add_api_route("/", lambda: FileResponse(WEB / "index.html"), methods=["GET", "HEAD"], include_in_schema=False)
    app.add_api_route("/api/health", lambda: {"status": "ok"}, methods=["GET"])
    app.add_api_route("/api/model", lambda: info, methods=["GET"])

    @app.post(
        "/api/predict",
        responses={
            400: {"description": "not a multipart request with files, or too many"},
            413: {"description": "a file or the request too large"},
            422: {"description": "some files are not usable images (see errors)"},
        },
    )
    async def predict(request: Request):
        """Images in the multipart field `files`. Answers {"results": [rows of `predict --json` plus "preview"
        (PNG data URL) and "probabilities" (10)], "errors": [{"file", "error"}]}: 200 when every file was read, 422
        (413 if a file is over the size limit) when some were not; the good ones are in "results" either way."""
        form = await read_form(request)
        if form is None:
            return Response(status_code=400)  # nobody is listening any more; nothing to log either
        try:
            items, errors = await read_files(form)
        finally:
            await form.close()
        # Blocking work (PIL, torch) off the event loop; one batch for the whole request.
        rows, extras, failed = await run_in_threadpool(predict_images, model, items, True, 3)
        results = [
            {**row, "preview": preview_png(array), "probabilities": probs} for row, (array, probs) in zip(rows, extras)
        ]
        errors += [{"file": name, "error": reason, "status": 422} for name, reason in failed]
        status = 200 if not errors else 413 if any(e["status"] == 413 for e in errors) else 422
        return JSONResponse(
            {"results": results, "errors": [{k: e[k] for k in ("file", "error")} for e in errors]}, status_code=status
        )

    return app
