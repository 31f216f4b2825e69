"""The dashboard's routes (docs/dashboard.md): the login, the pages, the forms and the live job stream, added to
the coordinator's FastAPI app by `add_dashboard`.

Every page needs a session (else a redirect to `/login`); every form carries the session's CSRF token and is
refused (403) without it (the login form, before any session, a token of its own also set as a cookie); sending
a job and acknowledging or resolving an alert need the operator role (a read-only session sees no such button
and gets 403 from the endpoint). A command to a group or to every board is shown back for a confirmation
before it is sent. Pages are rendered on the server from `templates/`;
`static/dashboard.js` draws the charts (vendored Chart.js) from JSON embedded in the page, sorts tables and
follows a job's stream (server-sent events). Every dashboard response (pages, redirects, static files) forbids
other origins (Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Optional, TypeVar
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2.utils import htmlsafe_json_dumps
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from agent.errors import JobError
from agent.fleet import jobs, regressions
from agent.fleet.api import Dispatch, plain
from agent.fleet.dashboard import views
from agent.fleet.jobs import iso
from agent.fleet.sessions import COOKIE, Login, LoginThrottle, Sessions, csrf_ok
from agent.fleet.store.database import Store
from agent.mqtt.schema import COMMANDS

HERE = Path(__file__).parent
Shown = TypeVar("Shown")
SENT_COMMANDS = ("bench", "eval", "profile", "select", "info", "ping")  # what the job form offers
BACKENDS = ("onnxruntime", "tflite", "tensorrt", "auto")
PRECISIONS = ("fp32", "fp16", "int8")
FORM_BYTES = 64 * 1024  # a posted form larger than this is refused
FORM_FIELDS = {"model": str, "backend": str, "precision": str, "threads": int, "iterations": int, "batch": int,
               "min_seconds": float, "time_limit": float, "memory_limit_mb": int, "eval_limit": int, "budget": float}
LOGIN_COOKIE = "edge_login"  # the login form's own CSRF token (double submit), before any session exists
STREAM_EVERY_S = 0.5  # how often a job's stream looks at the store
STREAM_MAX_S = 6 * 3600.0  # a stream ends by then (the browser reconnects if it is still open)
NOT_DASHBOARD = ("/api/", "/metrics", "/openapi.json", "/docs", "/redoc")  # the API's own paths keep its headers
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware: `SECURITY_HEADERS` on every dashboard response (pages, redirects, static files, the
    stream), none on the API's own paths. Pure ASGI, so a streamed response passes through untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(NOT_DASHBOARD):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


class LoginNeeded(Exception):
    """A page was asked for without a valid session: the answer is a redirect to the login."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class PageError(Exception):
    """A page's own error: an HTTP status and one line for the operator."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _environment() -> Environment:
    environment = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]),
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(ms=_ms, pct=_pct, num=_num, ago=_ago, when=_when, short=lambda value: (value or "")[:12])
    environment.filters["json"] = lambda value: htmlsafe_json_dumps(plain(value))  # safe inside <script>
    return environment


def _ms(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _pct(value: Optional[float]) -> str:
    """A fraction in 0..1 (Top-1, agreement) as a percentage."""
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: Optional[float]) -> str:
    if value is None:
        return "–"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _ago(moment: Optional[datetime]) -> str:
    if moment is None:
        return "never"
    seconds = max(0.0, (datetime.now(timezone.utc) - moment).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _when(moment: Optional[datetime]) -> str:
    return "–" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def sparkline(values: Any, width: int = 96, height: int = 22) -> str:
    """The points of an SVG polyline drawing `values` (oldest first) in a width x height box."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    return " ".join(f"{index * step:.1f},{height - 1 - (value - low) / span * (height - 2):.1f}"
                    for index, value in enumerate(values))


def add_dashboard(app: FastAPI, store: Store, sessions: Sessions, dispatch: Optional[Dispatch] = None,
                  secure_cookie: bool = False) -> None:
    """Serve the dashboard's pages, forms, stream and static files from `app`."""
    environment = _environment()
    environment.globals["sparkline"] = sparkline
    throttle = LoginThrottle()

    def render(request: Request, template: str, login: Optional[Login], status: int = 200,
               **values: Any) -> HTMLResponse:
        page = environment.get_template(template).render(request=request, login=login, path=request.url.path,
                                                         operator=login is not None and login.token.role == "operator",
                                                         **values)
        return HTMLResponse(page, status_code=status)

    def session(request: Request) -> Login:
        login = sessions.check(request.cookies.get(COOKIE))
        if login is None:
            raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return login

    async def form(request: Request, login: Login, operator: bool) -> Dict[str, str]:
        """The posted form's fields, once its CSRF token (and, for `operator`, the role) is checked."""
        fields = await _fields(request)
        if not csrf_ok(login, fields.get("csrf")):
            raise PageError(403, "the form's CSRF token is missing or not this session's: reload the page and "
                                 "try again")
        if operator and login.token.role != "operator":
            raise PageError(403, f"{login.token.name!r} is read-only: sending jobs and changing alerts needs an "
                                 "operator login")
        return fields

    @app.exception_handler(LoginNeeded)
    async def login_needed(request: Request, error: LoginNeeded) -> Response:
        if request.url.path.endswith("/stream"):
            return Response("log in first", status_code=401)
        return RedirectResponse(f"/login?next={quote(error.path)}", status_code=303)

    @app.exception_handler(PageError)
    async def page_error(request: Request, error: PageError) -> Response:
        return render(request, "error.html", sessions.check(request.cookies.get(COOKIE)), status=error.status,
                      message=error.message)

    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def login_form(request: Request, target: str, status: int = 200, failed: str = "") -> Response:
        """The login page, with a fresh token for its form in the page and in a cookie (login CSRF)."""
        nonce = secrets.token_urlsafe(16)
        response = render(request, "login.html", None, status=status, next=target, failed=failed, form_token=nonce)
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict",
                            secure=secure_cookie, path="/login")
        return response

    @app.get("/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> Response:
        return login_form(request, _local(next))

    @app.post("/login", include_in_schema=False)
    async def login_post(request: Request) -> Response:
        fields = await _fields(request)
        address = request.client.host if request.client else "-"
        target = _local(fields.get("next", "/"))
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected.encode(), fields.get("csrf", "").encode()):
            return login_form(request, target, 403, "the login form expired or came from elsewhere: log in again")
        if throttle.blocked(address):
            return login_form(request, target, 429, "too many failed logins from this address: wait a few minutes")
        cookie = sessions.open(fields.get("token", ""))
        if cookie is None:
            throttle.failed(address)
            return login_form(request, target, 401, "that token is not known")
        response = RedirectResponse(target, status_code=303)
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        response.set_cookie(COOKIE, cookie, max_age=int(sessions.lifetime_s), httponly=True, samesite="strict",
                            secure=secure_cookie, path="/")
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await form(request, session(request), operator=False)
        sessions.revoke(request.cookies.get(COOKIE, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/", include_in_schema=False)
    def fleet(request: Request, group: str = "", board_model: str = "", state: str = "", q: str = "",
              page: int = 1) -> Response:
        login = session(request)
        filters = views.BoardFilters(group or None, board_model or None, state or None, q or None)
        return render(request, "overview.html", login, view=views.overview(store, filters, page))

    @app.get("/boards/{device_id}", include_in_schema=False)
    def board(request: Request, device_id: str) -> Response:
        login = session(request)
        return render(request, "board.html", login,
                      view=_known(views.board_page(store, device_id), f"unknown board {device_id!r}"))

    @app.get("/models", include_in_schema=False)
    def model_list(request: Request) -> Response:
        return render(request, "models.html", session(request), models=views.models(store))

    @app.get("/models/{sha256}", include_in_schema=False)
    def model(request: Request, sha256: str) -> Response:
        login = session(request)
        return render(request, "model.html", login,
                      view=_known(views.model_page(store, sha256), f"no measurement of model {sha256!r}"))

    @app.get("/compare", include_in_schema=False)
    def compare(request: Request, a: int = 0, b: int = 0) -> Response:
        login = session(request)
        if not (a and b):
            raise PageError(422, "choose two measurements (A and B) on a model's or a board's page")
        return render(request, "compare.html", login,
                      view=_known(views.compare(store, a, b), f"no measurement {a} or {b}"))

    @app.get("/results/{device_id}/{command_id}", include_in_schema=False)
    def result(request: Request, device_id: str, command_id: str) -> Response:
        login = session(request)
        found = _known(views.result_page(store, device_id, command_id),
                       f"no result of command {command_id!r} from board {device_id!r}")
        return render(request, "result.html", login, view=found)

    @app.get("/alerts", include_in_schema=False)
    def alerts(request: Request, state: str = "open") -> Response:
        login = session(request)
        chosen = state if state in ("open", "acknowledged", "resolved", "noted") else None
        return render(request, "alerts.html", login, alerts=regressions.list_alerts(store, chosen, None, 500),
                      state=chosen or "all", back=f"/alerts?state={chosen or 'all'}")

    @app.post("/alerts/{alert_id}/{action}", include_in_schema=False)
    async def alert_action(request: Request, alert_id: int, action: str) -> Response:
        login = session(request)
        fields = await form(request, login, operator=True)
        states = {"ack": "acknowledged", "resolve": "resolved"}
        if action not in states:
            raise PageError(404, f"no alert action {action!r} (ack, resolve)")
        moved = await run_in_threadpool(regressions.move_alert, store, alert_id, states[action])
        if moved is None:
            raise PageError(404, f"unknown alert {alert_id}")
        if moved.state != states[action]:
            raise PageError(409, f"alert {alert_id} is {moved.state}: it cannot be {states[action]}")
        return RedirectResponse(_local(fields.get("back", "/alerts")), status_code=303)

    @app.get("/jobs", include_in_schema=False)
    def job_list(request: Request) -> Response:
        login = session(request)
        boards, groups = views.targets(store)
        return render(request, "jobs.html", login, jobs=views.job_summaries(store, 100), commands=SENT_COMMANDS,
                      backends=BACKENDS, precisions=PRECISIONS, boards=boards, groups=groups)

    @app.post("/jobs", include_in_schema=False)
    async def job_send(request: Request) -> Response:
        login = session(request)
        fields = await form(request, login, operator=True)
        target, cmd = fields.get("target", ""), fields.get("cmd", "")
        args = _job_args(cmd, fields)
        if (target == "all" or target.startswith("group:")) and fields.get("confirmed") != "yes":
            try:
                count = len(await run_in_threadpool(jobs.check_job, store, target, cmd, args))
            except JobError as error:
                raise PageError(422, f"{error.code}: {error.message}") from None
            return render(request, "confirm.html", login, target=target, cmd=cmd, args=args, fields=fields,
                          count=count)
        if dispatch is None:
            raise PageError(503, "this coordinator has no broker link to send jobs with")
        try:
            view = await run_in_threadpool(dispatch, target, cmd, args, login.token.name)
        except JobError as error:
            raise PageError(404 if error.code == "unknown_board" else 422, f"{error.code}: {error.message}") from None
        return RedirectResponse(f"/jobs/{quote(view.id, safe='')}", status_code=303)

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def job(request: Request, job_id: str) -> Response:
        login = session(request)
        found = _known(jobs.get_job(store, job_id), f"unknown job {job_id!r}")
        return render(request, "job.html", login, job=found)

    @app.get("/jobs/{job_id}/stream", include_in_schema=False)
    async def job_stream(request: Request, job_id: str) -> Response:
        session(request)
        if await run_in_threadpool(jobs.get_job, store, job_id) is None:
            raise PageError(404, f"unknown job {job_id!r}")
        return StreamingResponse(_follow(request, store, job_id), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})


async def _fields(request: Request) -> Dict[str, str]:
    """A posted form's fields (the last value of each), or a PageError for one too large or malformed."""
    if int(request.headers.get("content-length") or 0) > FORM_BYTES:
        raise PageError(413, f"the form is larger than {FORM_BYTES // 1024} KiB")
    body = await request.body()
    if len(body) > FORM_BYTES:
        raise PageError(413, f"the form is larger than {FORM_BYTES // 1024} KiB")
    try:
        return {key: values[-1] for key, values in parse_qs(body.decode("utf-8", "replace"), max_num_fields=50).items()}
    except ValueError:
        raise PageError(413, "the form has too many fields") from None


async def _follow(request: Request, store: Store, job_id: str) -> AsyncIterator[str]:
    """Server-sent events of one job: its document whenever it changes, `end` once every board is final."""
    last, started, quiet = "", asyncio.get_running_loop().time(), 0.0
    yield "retry: 2000\n\n"
    while asyncio.get_running_loop().time() - started < STREAM_MAX_S and not await request.is_disconnected():
        try:
            view = await run_in_threadpool(jobs.get_job, store, job_id)
        except Exception as error:  # the database went away: say so, keep the stream
            yield f"event: trouble\ndata: {json.dumps(str(error).splitlines()[0])}\n\n"
            view = None
        if view is not None:
            document = json.dumps(view.to_dict())
            if document != last:
                last, quiet = document, 0.0
                yield f"event: job\ndata: {document}\n\n"
            if view.finished:
                yield f"event: end\ndata: {json.dumps({'at': iso(datetime.now(timezone.utc))})}\n\n"
                return
        quiet += STREAM_EVERY_S
        if quiet >= 15:
            quiet = 0.0
            yield ": still here\n\n"
        await asyncio.sleep(STREAM_EVERY_S)


def _job_args(cmd: str, fields: Dict[str, str]) -> Dict[str, Any]:
    """The command's arguments from the job form: the filled fields the command takes, as numbers where they
    are numbers (the coordinator then checks them as a board would)."""
    spec = COMMANDS.get(cmd)
    if spec is None:
        return {}
    args: Dict[str, Any] = {}
    for name, kind in FORM_FIELDS.items():
        value = fields.get(name, "").strip()
        if not value or name not in spec.args:
            continue
        try:
            number = kind(value)
        except ValueError:
            raise PageError(422, f"{name}: {value!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise PageError(422, f"{name}: {value!r} is not a finite number")
        args[name] = number
    return args


def _known(found: Optional[Shown], missing: str) -> Shown:
    """What a page shows, or a 404 page saying what is missing."""
    if found is None:
        raise PageError(404, missing)
    return found


def _local(target: str) -> str:
    """A redirect target on this site only (a path), never another host."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
