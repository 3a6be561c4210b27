"""The review page's web app (FastAPI): the bundled viewer and a small JSON/binary API.

Security, all on by default: the server binds 127.0.0.1; every request (page, script, API)
must carry the random token of this run (``?token=`` in the URL the command prints, or the
``X-Medimg-Token`` header the page sends), compared in constant time; a case is reached only by a
name the folder scan found, and every file read resolves inside the folder (no ``..``, no link
out); only the bundled static files are served; edits arrive as JSON with base64 slices (no
pickle, no eval).

API (all under the token):

* ``GET /api/cases``: the cases, queue order first, with their scores and review status;
* ``GET /api/cases/{case}``: grid, spacing, intensity range, label names and colours, record;
* ``GET /api/cases/{case}/slice?layer=&axis=&index=``: one display slice as raw little-endian
  bytes (``image``/``uncertainty``: float32; ``labels``/``proposal``: uint8), its shape in the
  ``X-Shape`` header (rows, columns);
* ``POST /api/cases/{case}/save``: ``{"edits": [{"axis", "index", "data": base64 uint8}],
  "status", "note", "reviewer"}``; writes the correction and its record.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from medimg.errors import MedimgError
from medimg.review.folder import STATUSES, ReviewFolder

__all__ = ["TOKEN_HEADER", "create_app", "serve", "serve_in_thread"]

TOKEN_HEADER = "X-Medimg-Token"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
MAX_NOTE = 10_000


def _static(name: str) -> str:
    return resources.files("medimg.review").joinpath("static", name).read_text(encoding="utf-8")


def create_app(folder: ReviewFolder, token: str) -> FastAPI:
    """The FastAPI app serving ``folder``; every request must carry ``token``."""
    app = FastAPI(title="medimg review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        given = request.query_params.get("token") or request.headers.get(TOKEN_HEADER) or ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "missing or wrong token; open the URL medimg review "
                                          "printed"}, status_code=403)  # fmt: skip
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"  # the token stays out of referers
        return response

    @app.exception_handler(MedimgError)
    async def one_line(request: Request, exc: MedimgError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(KeyError)
    async def unknown_case(request: Request, exc: KeyError) -> JSONResponse:
        return JSONResponse({"error": "no such case in the review folder"}, status_code=404)

    @app.get("/")
    def page() -> HTMLResponse:
        html = _static("index.html").replace("__TOKEN__", token)
        return HTMLResponse(html, headers={"Content-Security-Policy": (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")})  # fmt: skip

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:  # a fixed list: nothing else on disk is reachable
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response(_static(name), media_type=STATIC[name])

    @app.get("/api/cases")
    def cases() -> dict[str, Any]:
        rows = []
        for c in folder.cases.values():
            rec = folder.record(c.name)
            rows.append({"case": c.name, "queue": c.queue, "has_proposal": c.proposal is not None,
                         "has_uncertainty": c.uncertainty is not None,
                         "status": rec["status"] if rec else None})  # fmt: skip
        return {"folder": folder.root.name, "cases": rows}

    @app.get("/api/cases/{case}")
    def case_info(case: str) -> dict[str, Any]:
        info = folder.info(case)
        names = list(folder.cases)
        nxt = names.index(case) + 1
        if nxt < len(names):  # the next case of the queue is read while this one is reviewed
            folder.prefetch_in_background(names[nxt : nxt + 1])
        return info

    @app.get("/api/cases/{case}/slice")
    def slice_(case: str, layer: str = "image", axis: int = 2, index: int = 0) -> Response:
        arr = folder.slice(case, layer, axis, index)
        if layer == "uncertainty" or arr.dtype != np.uint8:
            arr = arr.astype("<f4", copy=False)
        return Response(arr.tobytes(), media_type="application/octet-stream",
                        headers={"X-Shape": f"{arr.shape[0]},{arr.shape[1]}",
                                 "X-Dtype": "uint8" if arr.dtype == np.uint8 else "float32"})  # fmt: skip

    @app.post("/api/cases/{case}/save")
    async def save(case: str, request: Request) -> Any:
        folder.case(case)  # unknown names: 404 before reading the body
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        status, note = body.get("status", "pending"), body.get("note", "")
        reviewer = body.get("reviewer", "")
        if status not in STATUSES or not isinstance(note, str) or not isinstance(reviewer, str):
            return JSONResponse({"error": f"status is one of {', '.join(STATUSES)}; note and "
                                          "reviewer are text"}, status_code=400)  # fmt: skip
        edits = []
        for e in body.get("edits", []):
            try:
                axis, index = int(e["axis"]), int(e["index"])
                shape = folder.slice(case, "labels", axis, index).shape
                data = np.frombuffer(base64.b64decode(e["data"], validate=True), np.uint8)
                edits.append((axis, index, data.reshape(shape)))
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": f"bad edit: {exc}"}, status_code=400)
        record = folder.save(case, edits, status=status, note=note[:MAX_NOTE],
                             reviewer=reviewer[:200])  # fmt: skip
        return record

    return app


def serve(
    root: str | Path, *, host: str = "127.0.0.1", port: int = 8765, token: str | None = None,
    open_browser: bool = False,
) -> None:  # fmt: skip
    """Serve the review page of ``root`` until interrupted (prints the URL with its token)."""
    import uvicorn

    folder = ReviewFolder(root)
    token = token or secrets.token_urlsafe(24)
    app = create_app(folder, token)
    folder.prefetch_in_background(list(folder.cases)[:1])  # the page opens on the first case
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/?token={token}"
    print(f"review page for {folder.root} ({len(folder.cases)} cases): {url}", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def serve_in_thread(
    root: str | Path | ReviewFolder, *, token: str | None = None
) -> tuple[str, Callable[[], None]]:
    """Start the server of ``root`` on a free port of 127.0.0.1 in a background thread (tests,
    benchmarks, notebooks); returns ``(page URL with its token, stop)``."""
    import socket
    import threading

    import uvicorn

    token = token or secrets.token_urlsafe(24)
    folder = root if isinstance(root, ReviewFolder) else ReviewFolder(root)
    app = create_app(folder, token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return f"http://127.0.0.1:{port}/?token={token}", stop
