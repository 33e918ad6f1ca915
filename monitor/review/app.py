"""`monitor review`: the page operators open every morning, a Starlette (ASGI) application with
Jinja2 templates over the change log and the captures. Read-only, except for corrections.

Routes: `/` the timeline (filters, counts, paging), `/event/<id>` one event (before and after
side by side with its regions drawn over them, the sentence, scores, the correction form),
`/event/<id>/<before|after>.jpg` its frames, `POST /event/<id>/correct`, `POST /export` (the
corrections as a fine-tuning dataset), `/api/events?after=N` (what the timeline polls for new
events), `/login?token=...` (sets the token cookie).

Who gets in: with a token, every request must carry it (`Authorization: Bearer`, or the cookie
`/login` sets); without, 401. POSTs carry a CSRF token; every response sends a strict
Content-Security-Policy (no inline script or style: `static/review.js`, `static/review.css`).
Jinja2 escapes every sentence and camera name."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from urllib.parse import urlencode

import cv2
import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from monitor.errors import MonitorError
from monitor.records import unix_time
from monitor.review.corrections import EVENT_ID, capture_folder, frame_file, read_correction, write_correction
from monitor.review.index import EventIndex, IndexedEvent, Query, index_path

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
COOKIE = "monitor_review"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
KINDS = ("change", "camera_offline", "camera_online")
# A region's `change` as the page says it.
VERDICTS = {"appeared": "appeared", "disappeared": "left", "moved": "moved", "left_behind": "left behind",
            "passed": "passed through", "changed": "changed"}  # fmt: skip
REFRESH_S = 0.5  # how often the index follows the log (new events show within ~1.5 s)


@dataclass(frozen=True)
class ReviewSite:
    log_dir: Path
    captures: Path | None
    zone: tzinfo | None
    token: str | None = None
    ask_available: bool = False  # a VLM describer is configured


def _clock(zone: tzinfo | None):
    def show(t: float) -> str:
        return datetime.fromtimestamp(t, tz=zone).astimezone(zone).isoformat(sep=" ", timespec="seconds")

    return show


def _parse_time(value: str | None, zone: tzinfo | None) -> float | None:
    """'2026-12-01' or '2026-12-01T08:00' (a browser's datetime-local) in the page's zone."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone) if zone is not None else dt.astimezone()
    return dt.timestamp()


def _size(path: Path | None) -> tuple[int, int] | None:
    """(width, height) of a capture frame, None when there is none (or it does not decode)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path is not None else None
    return (image.shape[1], image.shape[0]) if image is not None else None


class _Guard(BaseHTTPMiddleware):
    """The token (when one is set) and the security headers, on every response."""

    def __init__(self, app, token: str | None):
        super().__init__(app)
        self.token = token

    def _allowed(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.cookies.get(COOKIE) or ""
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if request.url.path == "/login":
            given = request.query_params.get("token", given)
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next) -> Response:
        if self._allowed(request):
            try:
                response = await call_next(request)
            except Exception as exc:  # noqa: BLE001 - one log line, never a stack trace in the page
                log.error("review_request_failed", path=request.url.path, error=f"{type(exc).__name__}: {exc}"[:200])
                response = PlainTextResponse("500: the page could not be built (see the server's log)", 500)
        else:
            response = PlainTextResponse("401: this page needs its access token (see monitor review --help)", 401)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        return response


class ReviewApp:
    def __init__(self, site: ReviewSite, index: EventIndex | None = None, asker=None):
        self.site = site
        self.asker = asker  # monitor.review.ask.Asker when a VLM is configured
        self.index = index or EventIndex(site.log_dir, index_path(site.log_dir), corrections=self._correction_of)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        show = _clock(site.zone)
        self.templates.env.globals["clock"] = show
        self.templates.env.globals["clock_iso"] = lambda iso: show(unix_time(iso))
        self.templates.env.globals["verdict"] = lambda change: VERDICTS.get(change, change)
        self.templates.env.filters["one_line"] = lambda s: "; ".join((s or "").splitlines())
        self.templates.env.filters["urlencode_page"] = lambda params, page: urlencode({**params, "page": page})
        self._csrf = hmac.new(secrets.token_bytes(32), b"csrf", hashlib.sha256).hexdigest()[:32]
        self._stop = threading.Event()
        self.index.refresh()
        routes = [
            Route("/", self.timeline),
            Route("/event/{event_id}", self.event),
            Route("/event/{event_id}/{name}.jpg", self.frame),
            Route("/event/{event_id}/correct", self.correct, methods=["POST"]),
            Route("/event/{event_id}/ask", self.ask, methods=["POST"]),
            Route("/export", self.export, methods=["POST"]),
            Route("/api/events", self.api_events),
            Route("/login", self.login),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        self.app = Starlette(
            routes=routes, middleware=[Middleware(_Guard, token=site.token)], lifespan=self._lifespan
        )  # fmt: skip

    # -- the index follows the log while the server runs --------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, _app):
        thread = threading.Thread(target=self._follow, name="review-index", daemon=True)
        thread.start()
        yield
        self._stop.set()
        thread.join(2)

    def _follow(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.index.refresh()
            except Exception as exc:  # noqa: BLE001 - a bad moment of the log must not stop following it
                log.warning("review_index_refresh_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    def _correction_of(self, record: dict) -> str | None:
        return read_correction(capture_folder(self.site.captures, record))

    def _page(self, request: Request, name: str, status: int = 200, **context) -> Response:
        context.update(csrf=self._csrf, site=self.site)
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def _find(self, event_id: str) -> IndexedEvent | None:
        return self.index.get(event_id) if EVENT_ID.match(event_id) else None

    # -- pages -------------------------------------------------------------------------------
    async def timeline(self, request: Request) -> Response:
        p = request.query_params
        page = int(p["page"]) if p.get("page", "").isdigit() else 1
        kind = p.get("kind") if p.get("kind") in KINDS else None
        q = Query(
            camera=p.get("camera") or None, kind=kind, text=(p.get("q") or "").strip()[:200] or None,
            since=_parse_time(p.get("since"), self.site.zone), until=_parse_time(p.get("until"), self.site.zone),
            page=page,
        )  # fmt: skip
        events, total = self.index.search(q)
        counts = self.index.counts()
        return self._page(
            request, "timeline.html", events=events, total=total, query=q, params=dict(p), kinds=KINDS,
            counts=counts, per_hour=self.index.per_hour(q.camera),
            pages=max(1, -(-total // q.per_page)), live_after=max((e.n for e in events), default=0),
            indexed=bool(counts),
        )  # fmt: skip

    async def event(self, request: Request, answer: tuple[str, str] | None = None) -> Response:
        found = self._find(request.path_params["event_id"])
        if found is None:
            return self._page(request, "missing.html", 404, what=request.path_params["event_id"])
        folder = capture_folder(self.site.captures, found.record)
        frames = {name: _size(frame_file(folder, f"{name}.jpg") if folder else None) for name in ("before", "after")}
        previous, following = self.index.neighbours(found)
        return self._page(
            request, "event.html", event=found, rec=found.record, frames=frames, previous=previous, following=following,
            correctable=folder is not None, saved=request.query_params.get("saved") == "1", answer=answer,
        )  # fmt: skip

    async def frame(self, request: Request) -> Response:
        found = self._find(request.path_params["event_id"])
        folder = capture_folder(self.site.captures, found.record) if found else None
        path = frame_file(folder, f"{request.path_params['name']}.jpg") if folder else None
        if path is None:
            return PlainTextResponse("404: no such frame", 404)
        return FileResponse(path, media_type="image/jpeg")

    async def correct(self, request: Request) -> Response:
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), self._csrf):
            return PlainTextResponse("403: the form is stale or not from this page (CSRF token)", 403)
        found = self._find(request.path_params["event_id"])
        folder = capture_folder(self.site.captures, found.record) if found else None
        text = str(form.get("text", "")).strip()[:2000]
        if folder is None or not text:
            return PlainTextResponse("400: no capture folder for this event, or no sentence given", 400)
        write_correction(folder, text)
        self.index.set_correction(found.event_id, read_correction(folder))
        log.info("review_corrected", event_id=found.event_id)
        return RedirectResponse(f"/event/{found.event_id}?saved=1", status_code=303)

    async def ask(self, request: Request) -> Response:
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), self._csrf):
            return PlainTextResponse("403: the form is stale or not from this page (CSRF token)", 403)
        found = self._find(request.path_params["event_id"])
        if self.asker is None or found is None:
            return PlainTextResponse("400: asking needs the VLM describer (describer.kind: vlm in --config)", 400)
        question = str(form.get("question", "")).strip()
        try:
            said = await run_in_threadpool(self.asker.ask, found.record, question)
        except MonitorError as exc:
            said = f"(no answer: {exc})"
        return await self.event(request, answer=(question, said))

    async def export(self, request: Request) -> Response:
        """The same code as `monitor finetune prepare --from-captures` (run as that command: the
        daemon's package never imports the training code)."""
        form = await request.form()
        if not hmac.compare_digest(str(form.get("csrf", "")), self._csrf):
            return PlainTextResponse("403: the form is stale or not from this page (CSRF token)", 403)
        if self.site.captures is None:
            return PlainTextResponse("400: no captures dir (--captures)", 400)
        out = self.site.captures.parent / f"corrections-{time.strftime('%Y%m%d-%H%M%S')}"
        command = [sys.executable, "-m", "monitor", "finetune", "prepare", "--from-captures", str(self.site.captures)]
        proc = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=600)
        said = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
        pairs = next((int(m[1]) for line in said if (m := re.search(r"(\d+) pairs", line))), 0)
        return self._page(request, "exported.html", ok=proc.returncode == 0, pairs=pairs, out=out, said=said[:20])

    async def api_events(self, request: Request) -> Response:
        after = request.query_params.get("after", "0")
        rows = self.index.newer_than(int(after) if after.isdigit() else 0)
        show = _clock(self.site.zone)
        return JSONResponse(
            [{"n": e.n, "event_id": e.event_id, "camera": e.camera, "kind": e.kind, "time": show(e.t_after),
              "text": e.shown_text.replace("\n", "; "), "corrected": e.corrected is not None} for e in rows]
        )  # fmt: skip

    async def login(self, request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        if self.site.token:  # only reached with the right token (the guard checked it)
            response.set_cookie(COOKIE, self.site.token, httponly=True, samesite="strict")
        return response
