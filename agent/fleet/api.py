"""The coordinator's HTTP API (FastAPI; docs/coordinator.md, "HTTP API and metrics").

Under `/api/v1`: boards, results, the cross-board comparison of a model, alerts and fleet jobs; `/metrics`
for Prometheus; the OpenAPI description at `/openapi.json` (and `/docs`). Every request but `/metrics`
(when `api.metrics_public`) needs `Authorization: Bearer <token>` (or the dashboard's session cookie,
agent/fleet/sessions.py); a token is known by its SHA-256 in the config, `read` tokens may GET, `operator`
tokens may also make jobs and acknowledge or resolve alerts. Every error is JSON,
`{"error": {"code": "...", "message": "one line"}}`: 401 without a valid token, 403 for a read token on an
operator action (or a session's POST without its CSRF token), 404 naming an unknown board, result, model, job
or alert, 422 for a bad request, 503 while the database is unreachable.
"""

from __future__ import annotations

import dataclasses
import hmac
from datetime import datetime
from typing import Any, Callable, Dict, Optional

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent import __version__
from agent.errors import JobError
from agent.fleet import jobs, queries, regressions
from agent.fleet.jobs import JobView, iso
from agent.fleet.metrics import CONTENT_TYPE, CoordinatorMetrics
from agent.fleet.sessions import COOKIE, Sessions, csrf_ok
from agent.fleet.settings import ApiSettings, ApiToken, hash_token
from agent.fleet.store.database import Store

Dispatch = Callable[[str, str, Dict[str, Any], str], JobView]  # (target, cmd, args, token name) -> the job
_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 409: "conflict", 422: "bad_request", 503: "unavailable"}


class ApiError(Exception):
    """An error answer: its HTTP status, a code and a one-line message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def plain(value: Any) -> Any:
    """Dataclasses, datetimes and sequences as JSON values (times in ISO 8601 UTC with a Z)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def make_app(store: Store, api: ApiSettings, dispatch: Optional[Dispatch] = None,
             metrics: Optional[CoordinatorMetrics] = None, sessions: Optional[Sessions] = None) -> FastAPI:
    """The API over `store`; `dispatch` makes and publishes fleet jobs (none: POST /jobs answers 503);
    `sessions` also lets the dashboard's session cookie in (its CSRF token in `X-CSRF-Token` on a POST)."""
    app = FastAPI(title="edge-agent coordinator", version=__version__,
                  description="Every board's results, compared across boards and watched for regressions.")
    registry = metrics or CoordinatorMetrics(store)

    def caller(request: Request) -> ApiToken:
        header = request.headers.get("authorization", "")
        login = sessions.check(request.cookies.get(COOKIE)) if sessions is not None and not header else None
        if login is not None:
            if request.method not in ("GET", "HEAD") and not csrf_ok(login, request.headers.get("x-csrf-token")):
                raise ApiError(403, "csrf", "a request made with a dashboard session needs its CSRF token "
                                            "(X-CSRF-Token)")
            return login.token
        scheme, _, token = header.partition(" ")
        if not api.tokens:
            raise ApiError(401, "unauthorized", "no API token is configured: add [[api.tokens]] to the coordinator's "
                                                "config (edge-agent coordinator --new-token NAME)")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send an API token: 'Authorization: Bearer <token>'")
        digest = hash_token(token.strip())
        for known in api.tokens:
            if hmac.compare_digest(known.sha256, digest):
                return known
        raise ApiError(401, "unauthorized", "the API token is not known")

    def operator(token: ApiToken = Depends(caller)) -> ApiToken:
        if token.role != "operator":
            raise ApiError(403, "forbidden", f"token {token.name!r} is read-only; this needs an operator token")
        return token

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error(error.status, error.code, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = f"no such path {request.url.path}" if error.status_code == 404 else str(error.detail)
        return _error(error.status_code, _STATUS_CODES.get(error.status_code, "error"), message)

    @app.exception_handler(SQLAlchemyError)
    async def database_error(request: Request, error: SQLAlchemyError) -> JSONResponse:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        return _error(503, "database_unavailable", f"the coordinator's database is unavailable: {reason}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, "bad_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.get("/api/v1/boards", summary="Every board: presence, hardware, runtimes")
    def boards(token: ApiToken = Depends(caller)) -> Dict[str, Any]:
        return {"boards": plain(queries.list_boards(store))}

    @app.get("/api/v1/boards/{device_id}", summary="One board, with its newest telemetry")
    def board(device_id: str, telemetry: int = Query(20, ge=0, le=10_000),
              token: ApiToken = Depends(caller)) -> Dict[str, Any]:
        found = queries.get_board(store, device_id, telemetry)
        if found is None:
            raise ApiError(404, "unknown_board", f"unknown board {device_id!r}")
        return plain(found)

    @app.get("/api/v1/results", summary="Results, newest first, with their measurements")
    def results(device: Optional[str] = None, model: Optional[str] = None, cmd: Optional[str] = None,
                limit: int = Query(100, ge=1, le=10_000), token: ApiToken = Depends(caller)) -> Dict[str, Any]:
        return {"results": plain(queries.list_results(store, device, model, cmd, limit))}

    @app.get("/api/v1/results/{device_id}/{command_id}", summary="One result, with the message as it arrived")
    def result(device_id: str, command_id: str, token: ApiToken = Depends(caller)) -> Dict[str, Any]:
        found = queries.get_result(store, device_id, command_id)
        if found is None:
            raise ApiError(404, "unknown_result", f"no result of command {command_id!r} from board {device_id!r}")
        return plain(found)

    @app.get("/api/v1/compare", summary="One model across boards: each configuration's latest measures, spread")
    def compare(model: str = Query(..., description="the model file's sha256"),
                token: ApiToken = Depends(caller)) -> Dict[str, Any]:
        if not queries.known_model(store, model):
            raise ApiError(404, "unknown_model", f"no measurement of model {model!r}")
        rows = queries.compare_boards(store, model)
        return {"model_sha256": model, "rows": plain(rows), "spread": plain(queries.spread(rows)),
                "selected": plain(queries.selected_configurations(store, model))}

    @app.get("/api/v1/alerts", summary="Regression alerts and expected changes, newest first")
    def alerts(state: Optional[str] = Query(None, pattern="^(open|acknowledged|resolved|noted)$"),
               device: Optional[str] = None, limit: int = Query(200, ge=1, le=10_000),
               token: ApiToken = Depends(caller)) -> Dict[str, Any]:
        return {"alerts": [alert.to_dict() for alert in regressions.list_alerts(store, state, device, limit)]}

    def move(alert_id: int, state: str) -> Dict[str, Any]:
        found = regressions.move_alert(store, alert_id, state)
        if found is None:
            raise ApiError(404, "unknown_alert", f"unknown alert {alert_id}")
        if found.state != state:
            raise ApiError(409, "conflict", f"alert {alert_id} is {found.state}: it cannot be {state}")
        return found.to_dict()

    @app.post("/api/v1/alerts/{alert_id}/ack", summary="Acknowledge an open alert (operator)")
    def acknowledge(alert_id: int, token: ApiToken = Depends(operator)) -> Dict[str, Any]:
        return move(alert_id, "acknowledged")

    @app.post("/api/v1/alerts/{alert_id}/resolve", summary="Resolve an open or acknowledged alert (operator)")
    def resolve(alert_id: int, token: ApiToken = Depends(operator)) -> Dict[str, Any]:
        return move(alert_id, "resolved")

    @app.get("/api/v1/jobs", summary="Fleet jobs, newest first, with each board's state")
    def job_list(limit: int = Query(100, ge=1, le=10_000), token: ApiToken = Depends(caller)) -> Dict[str, Any]:
        return {"jobs": [view.to_dict() for view in jobs.list_jobs(store, limit)]}

    @app.get("/api/v1/jobs/{job_id}", summary="One fleet job")
    def job(job_id: str, token: ApiToken = Depends(caller)) -> Dict[str, Any]:
        found = jobs.get_job(store, job_id)
        if found is None:
            raise ApiError(404, "unknown_job", f"unknown job {job_id!r}")
        return found.to_dict()

    @app.post("/api/v1/jobs", status_code=202, summary="Send a command to a board, group:NAME or all (operator)")
    def new_job(target: str = Body(..., max_length=200), cmd: str = Body(..., max_length=64),
                args: Dict[str, Any] = Body(default_factory=dict),
                token: ApiToken = Depends(operator)) -> Dict[str, Any]:
        if dispatch is None:
            raise ApiError(503, "unavailable", "this API has no broker link to send jobs with")
        try:
            return dispatch(target, cmd, args, token.name).to_dict()
        except JobError as error:
            raise ApiError(404 if error.code == "unknown_board" else 422, error.code, error.message) from None

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus(request: Request) -> Response:
        if not api.metrics_public:
            caller(request)
        return Response(registry.render(), media_type=CONTENT_TYPE)

    return app
