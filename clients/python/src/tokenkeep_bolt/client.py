"""The token service's HTTP client.

Authentication: in AWS the routes sit behind the HTTP API's IAM authorizer, so
each request is SigV4-signed with botocore (service ``execute-api``) using the
caller's own credentials; locally, ``tokenkeep dev`` wants its generated key
(``Authorization: Bearer``). Requests time out, and only failures that did not
reach a decision (connection errors, timeouts, 429, 502-504) are retried, a
bounded number of times with backoff. Errors carry the service's error code,
HTTP status and request id: never a token, never a response body.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Optional

logger = logging.getLogger("tokenkeep_bolt")

_RETRY_STATUS = {429, 502, 503, 504}


class TokenkeepError(Exception):
    """A refused or failed token service call. Safe to log."""

    def __init__(self, operation: str, code: str, status: Optional[int] = None, request_id: Optional[str] = None):
        self.operation = operation
        self.code = code
        self.status = status
        self.request_id = request_id
        super().__init__(f"tokenkeep {operation}: {code} (HTTP {status}, request {request_id})")


class NotInstalled(TokenkeepError):
    """tokenkeep holds no installation for the tenant (never installed, uninstalled, or needs reinstall)."""


class TokenkeepClient:
    """Calls the token service at ``url`` (e.g. ``http://127.0.0.1:3000`` or the HTTP API's URL)."""

    def __init__(
        self,
        url: str,
        *,
        dev_key: Optional[str] = None,
        aws_region: Optional[str] = None,
        timeout: float = 5.0,
        max_attempts: int = 3,
    ):
        if dev_key is None and aws_region is None:
            raise ValueError("TokenkeepClient needs dev_key (tokenkeep dev) or aws_region (SigV4 in AWS)")
        self._url = url.rstrip("/")
        self._dev_key = dev_key
        self._region = aws_region
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        self._credentials = None
        if dev_key is None:
            import botocore.session  # the [aws] extra

            self._credentials = botocore.session.get_session().get_credentials()
            if self._credentials is None:
                raise ValueError("no AWS credentials found for SigV4 signing")

    @classmethod
    def from_env(cls, **kwargs: Any) -> "TokenkeepClient":
        """``TOKENKEEP_URL``; then ``TOKENKEEP_DEV_KEY_FILE`` (or ``TOKENKEEP_DEV_KEY``) for
        ``tokenkeep dev``, else SigV4 in ``AWS_REGION``."""
        url = os.environ["TOKENKEEP_URL"]
        key = os.environ.get("TOKENKEEP_DEV_KEY")
        key_file = os.environ.get("TOKENKEEP_DEV_KEY_FILE")
        if key is None and key_file:
            with open(key_file, encoding="ascii") as f:
                key = f.read().strip()
        if key is not None:
            return cls(url, dev_key=key, **kwargs)
        return cls(url, aws_region=os.environ.get("AWS_REGION") or os.environ["AWS_DEFAULT_REGION"], **kwargs)

    def __repr__(self) -> str:
        mode = "dev-key" if self._dev_key is not None else f"sigv4:{self._region}"
        return f"TokenkeepClient(url={self._url!r}, auth={mode})"

    # ---- routes ---------------------------------------------------------------

    def authorize(self, body: str, timestamp: str, signature: str) -> Dict[str, Any]:
        """The tokens of the tenant this Slack-signed request speaks for.

        Raises :class:`NotInstalled` when tokenkeep holds none for it, and
        :class:`TokenkeepError` (``invalid_slack_signature``) for a forged, stale
        or replayed request."""
        return self._call("authorize", "/tokens/authorize", {"body": body, "timestamp": timestamp, "signature": signature})

    def store_installation(self, installation: Dict[str, Any]) -> Dict[str, Any]:
        return self._call("store_installation", "/tokens/installations", installation)

    def find_installation(self, query: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        try:
            return self._call("find_installation", "/tokens/installations/find", query)["installation"]
        except NotInstalled:
            return None

    def find_bot(self, query: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        try:
            return self._call("find_bot", "/tokens/bots/find", query)["installation"]
        except NotInstalled:
            return None

    def delete(self, query: Dict[str, Any]) -> int:
        return int(self._call("delete", "/tokens/installations/delete", query).get("deleted", 0))

    # ---- transport ------------------------------------------------------------

    def _headers(self, method: str, url: str, data: bytes) -> Dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._dev_key is not None:
            headers["Authorization"] = f"Bearer {self._dev_key}"
            return headers
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(self._credentials.get_frozen_credentials(), "execute-api", self._region).add_auth(request)
        return dict(request.headers.items())

    def _call(self, operation: str, path: str, payload: Dict[str, Any]) -> Dict[str, Any]:
        url = self._url + path
        data = json.dumps(payload).encode("utf-8")
        last: Optional[TokenkeepError] = None
        for attempt in range(1, self._max_attempts + 1):
            # Signed per attempt: a SigV4 signature carries its time.
            request = urllib.request.Request(url, data=data, method="POST", headers=self._headers("POST", url, data))
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    answer = json.loads(response.read() or b"{}")
                    if answer.get("ok") is True:
                        return answer
                    last = TokenkeepError(operation, str(answer.get("error", "unexpected_answer")), response.status)
                    break
            except urllib.error.HTTPError as e:
                code, request_id = _error_of(e)
                error_type = NotInstalled if code == "not_installed" else TokenkeepError
                last = error_type(operation, code, e.code, request_id)
                if e.code not in _RETRY_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                # The reason names the transport problem (refused, timed out), never a payload.
                reason = getattr(e, "reason", e)
                last = TokenkeepError(operation, f"unreachable: {type(reason).__name__}")
            if attempt < self._max_attempts:
                time.sleep(min(2.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random()))
        assert last is not None
        raise last


def _error_of(e: urllib.error.HTTPError):
    try:
        body = json.loads(e.read() or b"{}")
        return str(body.get("error", "http_error")), body.get("request_id")
    except (ValueError, OSError):
        return "http_error", None
