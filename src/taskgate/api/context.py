"""The request id of the request being served, for logs and error bodies."""

from taskgate.logs import RequestIdFilter, request_id

__all__ = ["RequestIdFilter", "request_id"]
