"""Error answers in the shape each spec declares for the operation and status at hand.

The two specs do not agree with themselves: the same status has different bodies on different
operations (errors as strings, as `{code, message}` objects, as one object, or no body at all).
The table below follows the `responses` of each operation, falling back to its `default`.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from connector.config import Generation

__all__ = ["ApiError", "problem_response"]

PROBLEM_JSON = "application/problem+json"

# Gateway operations that declare ResourceNotFoundResponse (errors as strings) for 404; the others
# fall back to GeneralErrorResponse (errors as objects).
_GATEWAY_404_AS_STRINGS = frozenset(
    {
        "getwebhookbyid-1",
        "updatewebhook-1",
        "deletewebhookbyid-1",
        "getjwkpublickey-1",
        "getchatapichannel-1",
        "updatechatapichannel-1",
        "deletechatapichannelbyid-1",
        "getcctransaction-1",
        "getccinteractions",
        "userparticipantleavecctransaction",
        "sendmessagetocctransaction-1",
        "getmessagebyidforcctransaction",
        "getconversationattachments",
        "addconversationattachments",
    }
)
# Gateway operations whose 403 is GeneralErrorResponse (errors as objects), not ForbiddenRequestResponse.
_GATEWAY_403_AS_OBJECTS = frozenset({"createchatapichannel-1", "addconversationattachments"})


class ApiError(Exception):
    """An answer other than success: its status, a message and the individual errors."""

    def __init__(
        self, status: int, message: str, errors: list[str] | None = None, *, code: str = "invalid_request"
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors if errors is not None else [message]
        self.code = code
        self.headers: dict[str, str] = {}


def problem_response(generation: Generation, operation: str, error: ApiError) -> web.Response:
    """The HTTP answer for `error` raised by `operation`, shaped as that operation's spec says."""
    body = _body(generation, operation, error)
    if body is None:
        return web.Response(status=error.status, headers=error.headers)
    return web.Response(
        status=error.status, body=json.dumps(body).encode(), content_type=PROBLEM_JSON, headers=error.headers
    )


def _body(generation: Generation, operation: str, error: ApiError) -> dict[str, Any] | None:
    status, message = error.status, error.message
    objects = [{"code": error.code, "message": text} for text in error.errors]
    if generation is Generation.CHAT_API_V2:
        if operation == "createaccesstoken" and status != 500:
            return {"ErrorCode": error.code, "Error": message}
        if status == 401:
            return {"fault": {"faultstring": message, "detail": {"errorcode": error.code}}}
        if operation == "customerparticipantleavecctransaction" and status not in (401, 403, 404, 500):
            return None  # its `default` response has no content
        if operation == "createchatapichannel" and status == 400:
            validations = [{"field": text.split(":")[0], "code": error.code, "message": text} for text in error.errors]
            return {"message": message, "errors": objects, "validations": validations}
        if operation == "getjwkpublickey" and status == 404:
            return {
                "type": "ClientError",
                "title": "Resource not found.",
                "status": 404,
                "detail": message,
                "resourceType": "JWKPublic",
                "resourceId": error.errors[0],
                "instance": "ResourceNotFound",
            }
        return {"message": message, "errors": error.errors}
    if status == 401:
        return {"message": message, "errors": objects, "referenceId": secrets.token_hex(8)}
    if operation == "userparticipantleavecctransaction" and status not in (401, 403, 404, 500):
        return None  # its `default` response has no content
    if operation == "sendmessagetocctransaction-1" and status == 400:
        return {"message": message, "errors": objects[0], "referenceId": secrets.token_hex(8)}
    if (status == 403 and operation not in _GATEWAY_403_AS_OBJECTS) or (
        status == 404 and operation in _GATEWAY_404_AS_STRINGS
    ):
        return {"message": message, "errors": error.errors}
    return {"message": message, "errors": objects}
