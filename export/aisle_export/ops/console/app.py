"""The console's HTTP side: FastAPI routes over the SDK, the state store and the reports directory,
and ``ConsoleServer``, which runs them with uvicorn (in the foreground for ``aisle console``, or on a
thread for tests and the docs' screenshot script).

Every route answers JSON; bad input is a 400 naming the field (``{"error": ..., "field": ...}``),
a server or store that is down a 503, and the console stays up either way. Rule changes go through
``guard.check_rule_change``; everything else only reads.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from aisle import AisleError, InvalidRequest, PermissionDenied, RecClient, ServerUnavailable
from aisle_contract import DEFAULT_RULE_SET, MAX_CONTEXT_CHARS, MAX_EVENT_ID_CHARS, MAX_QUERY_CHARS, MAX_RULES_BYTES
from aisle_server.errors import StateUnavailable

from . import reports as report_files
from .guard import TOKEN_HEADER, ConsoleSettings, Refused, check_rule_change
from .store import MAX_ROWS, StoreReads
from .views import compare, error_field, result_rows

STATIC = files("aisle_export.ops.console") / "static"
#: Results a preview asks for at most: a console page, not a bulk export.
MAX_PREVIEW_K = 100
STATE_MISSING = "no state store: start the console with --state URL (`aisle serve` prints it)"
REPORTS_MISSING = "no reports directory: start the console with --reports DIR"
#: ``create_app``'s preview call: a ``Preview`` (and extra knobs) → the result rows the page draws
Recommend = Callable[..., list[dict[str, Any]]]


class Preview(BaseModel):
    """A search or feed preview: a query and/or a shopper, and the request's context for the rules."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field("", max_length=MAX_QUERY_CHARS)
    user_id: str = Field("", max_length=MAX_EVENT_ID_CHARS)
    k: int = Field(10, ge=1, le=MAX_PREVIEW_K)
    surface: str = Field("", max_length=MAX_CONTEXT_CHARS)
    segment: str = Field("", max_length=MAX_CONTEXT_CHARS)
    rule_set: str = Field(DEFAULT_RULE_SET, min_length=1, max_length=64)
    rules: bool = True


class DryRun(Preview):
    """The same request twice: with the stored ``rule_set`` (before) and with ``draft`` in its place (after)."""

    draft: str = Field(min_length=1, max_length=MAX_RULES_BYTES)


class RuleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_set: str = Field(DEFAULT_RULE_SET, min_length=1, max_length=64)
    rules: str = Field(min_length=1, max_length=MAX_RULES_BYTES)


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_set: str = Field(DEFAULT_RULE_SET, min_length=1, max_length=64)
    to: int | None = Field(None, ge=0)


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _aisle_error(exc: AisleError, field: str) -> JSONResponse:
    message = str(exc)
    if isinstance(exc, InvalidRequest):
        return _error(400, message, error_field(message, field))
    if isinstance(exc, PermissionDenied):
        return _error(403, message)
    return _error(503 if isinstance(exc, ServerUnavailable) or exc.retryable else 502, message)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        names = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = names[-1] if names else None
        return _error(400, f"{field or 'request'}: {first.get('msg', 'invalid')}", field)

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(report_files.NotAReport)
    async def not_a_report(_: Request, exc: report_files.NotAReport) -> JSONResponse:
        return _error(404, str(exc), "path")

    @app.exception_handler(StateUnavailable)
    async def store_down(_: Request, exc: StateUnavailable) -> JSONResponse:
        return _error(503, str(exc))


def catalog_titles(path: Path) -> dict[str, str]:
    """Item id → title of a catalog file (``aisle_export.data.catalog``: CSV, JSON Lines, Parquet)."""
    from aisle_export.data.catalog import read_catalog

    catalog = read_catalog(path)
    return dict(zip(catalog.item_ids.tolist(), catalog.titles.tolist()))


def create_app(settings: ConsoleSettings, client: RecClient | None = None) -> FastAPI:
    """The console's routes for ``settings``; ``client`` (default: one ``RecClient`` to ``settings.url``) is closed with the app."""
    sdk = client or RecClient(settings.url, headers=settings.headers, timeout_s=settings.timeout_s, retry=None)
    store = StoreReads(settings.state) if settings.state else None
    titles = catalog_titles(settings.catalog) if settings.catalog else {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        sdk.close()

    app = FastAPI(title="Aisle console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    def recommend(body: Preview, **extra: Any) -> list[dict[str, Any]]:
        answer = sdk.recommend(
            body.query,
            k=body.k,
            user_id=body.user_id or None,
            explain=True,
            cache=False,
            surface=body.surface,
            segment=body.segment,
            rule_set=body.rule_set,
            rules=body.rules,
            **extra,
        )
        return result_rows(answer, titles)

    _page_routes(app, settings, store, titles, recommend)
    _rule_routes(app, settings, sdk, recommend)
    _state_routes(app, store)
    _report_routes(app, settings.reports)
    return app


def _page_routes(
    app: FastAPI, settings: ConsoleSettings, store: StoreReads | None, titles: dict[str, str], recommend: Recommend
) -> None:
    @app.get("/", response_class=HTMLResponse)
    def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {
            "url": settings.url,
            "read_only": not settings.allow_rule_changes,
            "token_header": TOKEN_HEADER,
            "state": store.url if store else None,
            "reports": settings.reports is not None,
            "titles": len(titles),
        }

    @app.post("/api/preview", response_model=None)
    def preview(body: Preview) -> dict[str, Any] | JSONResponse:
        try:
            return {"results": recommend(body)}
        except AisleError as exc:
            return _aisle_error(exc, "query")


def _rule_routes(app: FastAPI, settings: ConsoleSettings, sdk: RecClient, recommend: Recommend) -> None:
    @app.get("/api/rules", response_model=None)
    def rules(rule_set: Annotated[str, Query(min_length=1, max_length=64)] = DEFAULT_RULE_SET) -> Any:
        try:
            return dict(sdk.list_rules(rule_set).raw)
        except AisleError as exc:
            return _aisle_error(exc, "rule_set")

    @app.post("/api/rules/dry-run", response_model=None)
    def dry_run(body: DryRun) -> dict[str, Any] | JSONResponse:
        """Nothing is stored: the draft travels with the request (the ``draft_rules`` knob)."""
        try:
            before = recommend(body)
        except AisleError as exc:
            return _aisle_error(exc, "query")
        try:
            after = recommend(body.model_copy(update={"rules": True}), draft_rules=body.draft)
        except AisleError as exc:
            return _aisle_error(exc, "draft")
        diff = compare([row["item_id"] for row in before], [row["item_id"] for row in after])
        return {"before": before, "after": after, **diff}

    def changed(token: str | None, change: Callable[[], Any], field: str) -> dict[str, Any] | JSONResponse:
        """A rule change, once the token allows it: the stored version's record, or the error on ``field``."""
        check_rule_change(settings, token)
        try:
            return dict(change().raw)
        except AisleError as exc:
            return _aisle_error(exc, field)

    @app.post("/api/rules/set", response_model=None)
    def set_rules(
        body: RuleChange, token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None
    ) -> dict[str, Any] | JSONResponse:
        return changed(token, lambda: sdk.set_rules(body.rules, body.rule_set), "rules")

    @app.post("/api/rules/rollback", response_model=None)
    def rollback(
        body: Rollback, token: Annotated[str | None, Header(alias=TOKEN_HEADER)] = None
    ) -> dict[str, Any] | JSONResponse:
        return changed(token, lambda: sdk.rollback_rules(body.rule_set, body.to), "to")


def _state_routes(app: FastAPI, store: StoreReads | None) -> None:
    @app.get("/api/shoppers/{user_id}/events", response_model=None)
    def events(
        user_id: Annotated[str, PathParam(min_length=1, max_length=MAX_EVENT_ID_CHARS)],
        n: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 20,
    ) -> dict[str, Any] | JSONResponse:
        if store is None:
            return _error(409, STATE_MISSING, "state")
        return {"user_id": user_id, "events": store.events(user_id, n)}

    @app.get("/api/catalog/changes", response_model=None)
    def changes(n: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 20) -> dict[str, Any] | JSONResponse:
        if store is None:
            return _error(409, STATE_MISSING, "state")
        return {"changes": store.changes(n)}


def _report_routes(app: FastAPI, directory: Path | None) -> None:
    @app.get("/api/reports", response_model=None)
    def reports() -> dict[str, Any] | JSONResponse:
        if directory is None:
            return _error(409, REPORTS_MISSING, "reports")
        return {"reports": report_files.list_reports(directory)}

    @app.get("/api/reports/html", response_model=None)
    def report_html(path: Annotated[str, Query(min_length=1, max_length=1024)]) -> dict[str, Any] | JSONResponse:
        if directory is None:
            return _error(409, REPORTS_MISSING, "reports")
        md = report_files.resolve(directory, path)
        if md.suffix != ".md":
            raise report_files.NotAReport(f"path {path!r} is not a .md report")
        return {"path": path, "html": report_files.render(md)}

    @app.get("/reports/{path:path}", response_model=None)
    def report_file(path: str) -> FileResponse | JSONResponse:
        if directory is None:
            return _error(409, REPORTS_MISSING, "reports")
        return FileResponse(str(report_files.resolve(directory, path)))


class ConsoleServer:
    """The console on ``host:port`` (0: a free port) in a background thread; ``url`` once started."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="aisle-console", daemon=True)
        self.url = ""

    def __enter__(self) -> ConsoleServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console did not start (port taken?)")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextlib.contextmanager
def running(settings: ConsoleSettings, port: int = 0) -> Iterator[ConsoleServer]:
    """``create_app(settings)`` served on a thread until the block ends (tests, the screenshot script)."""
    with ConsoleServer(create_app(settings), port=port) as server:
        yield server
