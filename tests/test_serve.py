"""digitnet.serve: the HTTP API in process (FastAPI's TestClient), bad input, and concurrency."""

import io
import threading

import pytest
from PIL import Image

from conftest import ROOT
from test_inputs import write_checkpoint

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from digitnet import serve  # noqa: E402
from digitnet.web import app as web  # noqa: E402

SAMPLE = ROOT / "samples" / "sample_image.png"


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def random_client(tmp_path_factory):
    ckpt = write_checkpoint(tmp_path_factory.mktemp("serve") / "random.ckpt")
    return TestClient(web.create_app(ckpt))


def test_health_model_and_docs(random_client):
    assert random_client.get("/api/health").json() == {"status": "ok"}
    model = random_client.get("/api/model").json()
    assert model["arch"] == "baseline" and model["holdout_accuracy"] is None and model["parameters"] == 542230
    assert "/api/predict" in random_client.get("/openapi.json").json()["paths"]
    assert random_client.get("/docs").status_code == 200
    page = random_client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http" not in random_client.get("/static/app.js").text.replace("https://", "")  # no CDN, works offline
    assert random_client.get("/static/style.css").status_code == 200


def test_bad_files_get_their_own_errors_and_good_ones_are_answered(random_client, tmp_path):
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, format="PNG")  # 400 Mpx in a few kB
    files = [
        ("files", ("good.png", SAMPLE.read_bytes(), "image/png")),
        ("files", ("notes.png", b"this is not an image", "image/png")),
        ("files", ("empty.png", b"", "image/png")),
        ("files", ("truncated.png", SAMPLE.read_bytes()[:120], "image/png")),
        ("files", ("bomb.png", bomb.getvalue(), "image/png")),
        ("files", ("huge.png", b"\x89PNG" + b"0" * (web.MAX_FILE_BYTES + 10), "image/png")),
    ]
    response = random_client.post("/api/predict", files=files)
    assert response.status_code == 413  # the worst of the errors: a file over the size limit
    body = response.json()
    assert [r["path"] for r in body["results"]] == ["good.png"]
    good = body["results"][0]
    assert set(good) >= {"path", "digit", "probability", "top", "preview", "probabilities"}
    assert good["preview"].startswith("data:image/png;base64,") and len(good["probabilities"]) == 10
    errors = {e["file"]: e["error"] for e in body["errors"]}
    assert set(errors) == {"notes.png", "empty.png", "truncated.png", "bomb.png", "huge.png"}
    assert "not an image" in errors["notes.png"] and errors["empty.png"] == "empty file"
    assert "decompression-bomb" in errors["bomb.png"] and "over 10 MB" in errors["huge.png"]
    only_bad = random_client.post("/api/predict", files=[("files", ("x.txt", b"hello", "text/plain"))])
    assert only_bad.status_code == 422 and only_bad.json()["results"] == []


@pytest.mark.parametrize(
    "request_kwargs, status, message",
    [
        # Starlette's own form limit, in its words and status
        (
            {"files": [("files", (f"{i}.png", b"x", "image/png")) for i in range(web.MAX_FILES + 1)]},
            400,
            str(web.MAX_FILES),
        ),
        ({"data": {"files": "not a file"}}, 400, "multipart"),
        ({"files": [("other", ("a.png", b"x", "image/png"))]}, 400, "no files"),
        (
            {
                "content": b"x" * 10,
                "headers": {
                    "content-type": "multipart/form-data; boundary=zz",
                    "content-length": str(web.MAX_REQUEST_BYTES + 1),
                },
            },
            413,
            "over",
        ),
    ],
)
def test_bad_requests_are_4xx_json(random_client, request_kwargs, status, message):
    response = random_client.post("/api/predict", **request_kwargs)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_a_garbage_multipart_body_is_a_400_and_no_stray_log_line(random_client, caplog):
    """python-multipart logged "Expected boundary character 45, got 103 at index 2" into the server's log."""
    response = random_client.post(
        "/api/predict", content=b"garbage body", headers={"content-type": "multipart/form-data; boundary=zz"}
    )
    assert response.status_code == 400
    assert not [r for r in caplog.records if r.name.startswith("python_multipart")], caplog.text


def test_uploads_are_never_written_to_disk(random_client, monkeypatch):
    import tempfile

    def no_disk(*args, **kwargs):
        raise AssertionError("an upload was spooled to disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", no_disk)
    big = png(Image.effect_noise((1600, 1600), 60))  # ~2.5 MB, over Starlette's 1 MB spool
    assert len(big) > 2**20
    response = random_client.post("/api/predict", files=[("files", ("big.png", big, "image/png"))])
    assert response.status_code in (200, 422)


@pytest.mark.slow
def test_a_trained_model_answers_like_predict_and_under_load(trained_checkpoint):
    from digitnet.core.checkpoints import load_checkpoint
    from digitnet.core.inference import predict_images

    client = TestClient(web.create_app(web.find_checkpoint(trained_checkpoint.parent)))
    model = client.get("/api/model").json()
    assert 0.9 < model["holdout_accuracy"] <= 1
    body = client.post("/api/predict", files=[("files", ("seven.png", SAMPLE.read_bytes(), "image/png"))]).json()
    row = body["results"][0]
    assert row["digit"] == 7
    rows, _, _ = predict_images(load_checkpoint(trained_checkpoint), [("seven.png", SAMPLE)], top_k=3)
    assert {k: row[k] for k in ("path", "digit", "probability", "top", "unsure", "notes")} == rows[
        0
    ]  # the same code, the same fields

    answers, failures = [], []

    def client_thread():
        for _ in range(50 // 8 + 1):
            r = client.post("/api/predict", files=[("files", ("seven.png", SAMPLE.read_bytes(), "image/png"))])
            (answers if r.status_code == 200 and r.json()["results"][0]["digit"] == 7 else failures).append(r)

    threads = [threading.Thread(target=client_thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures and len(answers) == 8 * (50 // 8 + 1)


def test_serve_cli_one_line_errors(tmp_path, capsys):
    for argv, named, code in (
        (["--port", "70000", str(SAMPLE)], "--port", 2),
        ([str(tmp_path)], str(tmp_path), 1),
        ([str(tmp_path / "none.ckpt")], str(tmp_path / "none.ckpt"), 1),
    ):
        with pytest.raises(SystemExit) as stop:
            serve.main(argv)
        assert stop.value.code == code and named in capsys.readouterr().err


def raw_multipart(parts, boundary="XXB", charset=None):
    body = b""
    for disposition, data in parts:
        body += f"--{boundary}\r\nContent-Disposition: form-data; {disposition}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    ctype = f"multipart/form-data; boundary={boundary}" + (f"; charset={charset}" if charset else "")
    return {"content": body, "headers": {"content-type": ctype}}


def test_odd_multipart_requests_found_by_a_hostile_try(random_client):
    sample = SAMPLE.read_bytes()
    # A file name that decodes to a lone surrogate was a 500 (JSON cannot carry it).
    r = random_client.post(
        "/api/predict", **raw_multipart([('name="files"; filename="+2AA-.png"', sample)], charset="utf-7")
    )
    assert r.status_code == 200 and r.json()["results"][0]["path"].startswith("\\ud800")
    # A part of `files` without a filename (or with RFC 5987's filename*= alone, which the parser does not read) was
    # silently dropped, then called "not a file upload": it gets its own error.
    for part in ('name="files"', "name=\"files\"; filename*=UTF-8''d%C3%A9.png"):
        r = random_client.post(
            "/api/predict", **raw_multipart([(part, b"x"), ('name="files"; filename="good.png"', sample)])
        )
        assert r.status_code == 422 and [x["path"] for x in r.json()["results"]] == ["good.png"]
        assert [e["file"] for e in r.json()["errors"]] == ["part 1"]
    assert random_client.head("/").status_code == 200
    # Media types are case-insensitive; a boundary is required.
    request = raw_multipart([('name="files"; filename="good.png"', sample)])
    request["headers"]["content-type"] = request["headers"]["content-type"].replace(
        "multipart/form-data", "Multipart/Form-Data"
    )
    assert random_client.post("/api/predict", **request).status_code == 200
    for ctype in ("multipart/form-dataX; boundary=XXB", "multipart/form-data; boundary=", "multipart/form-data"):
        request["headers"]["content-type"] = ctype
        assert random_client.post("/api/predict", **request).status_code == 400, ctype


def test_images_too_large_to_be_digits_are_refused_per_file(random_client):
    import numpy as np

    tall = io.BytesIO()
    Image.fromarray(np.zeros((70_000, 1000), dtype=np.uint8)).save(tall, format="PNG")  # 70 Mpx, a few kB
    r = random_client.post(
        "/api/predict",
        files=[
            ("files", ("tall.png", tall.getvalue(), "image/png")),
            ("files", ("good.png", SAMPLE.read_bytes(), "image/png")),
        ],
    )
    assert r.status_code == 422 and "1000x70000 (70 Mpx)" in r.json()["errors"][0]["error"]
    assert [x["path"] for x in r.json()["results"]] == ["good.png"]


def test_serve_cli_names_odd_paths_in_one_line(tmp_path, capsys):
    for argv, named in (
        ([str(tmp_path / "a\nb.ckpt")], "a\\nb.ckpt"),
        (["--host", "", str(SAMPLE)], "--host"),
        ([str(SAMPLE)], str(SAMPLE)),
    ):
        with pytest.raises(SystemExit):
            serve.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert named in err[-1] and "Traceback" not in "\n".join(err), err


def test_a_cut_off_upload_says_so(random_client):
    sample = SAMPLE.read_bytes()
    request = raw_multipart([('name="files"; filename="a.png"', sample), ('name="files"; filename="b.png"', sample)])
    whole = request["content"]
    assert random_client.post("/api/predict", **request).status_code == 200
    for cut in (len(whole) - 4, len(whole) // 2, len(whole) // 4):  # inside the closing boundary, in b.png, in a.png
        r = random_client.post("/api/predict", content=whole[:cut], headers=request["headers"])
        assert r.status_code == 400 and "the upload was cut off" in r.json()["detail"], cut


def test_an_unsure_reading_says_so(random_client):
    """A random net is torn between digits: its rows are flagged, for the page and for scripts."""
    row = random_client.post("/api/predict", files=[("files", ("7.png", SAMPLE.read_bytes(), "image/png"))]).json()
    result = row["results"][0]
    assert result["unsure"] is (result["probability"] < 0.7) and result["notes"] == []
