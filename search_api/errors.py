"""JSON errors: {"error": {"code", "message", "field"}} with the right status, never a traceback."""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, field: str | None = None):
    resp = jsonify({"error": {"code": code, "message": message, "field": field}})
    resp.status_code = status
    return resp


CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable", 429: "rate_limited",
         503: "unavailable"}


def install(app: Flask) -> None:
    @app.errorhandler(APIError)
    def _api_error(e: APIError):
        resp = error_response(e.status, e.code, e.message, e.field)
        resp.headers.update(e.headers)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        status = e.code or 500
        message = e.description or e.name
        if status == 429:
            message = f"too many requests: limit is {e.description}"
        resp = error_response(status, CODES.get(status, "error"), message)
        if status == 405 and e.valid_methods:
            resp.headers["Allow"] = ", ".join(e.valid_methods)
        return resp

    from kb.pg import Unavailable

    @app.errorhandler(Unavailable)
    def _unavailable(e: Unavailable):  # the details name servers: they go to the log, not to callers
        app.logger.error("database unavailable: %s", e)
        resp = error_response(503, "unavailable", "the database is unavailable; try again shortly")
        resp.headers["Retry-After"] = "5"
        return resp

    from kb.analytics import StoreUnavailable

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(e: StoreUnavailable):  # disk full or read-only: say so; what is stored stays
        app.logger.error("analytics store: %s (%s)", e, e.__cause__)
        resp = error_response(503, "unavailable", f"{e}; try again later")
        resp.headers["Retry-After"] = "30"
        return resp

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        app.logger.exception("unhandled error")
        return error_response(500, "internal", "internal error; it has been logged")
