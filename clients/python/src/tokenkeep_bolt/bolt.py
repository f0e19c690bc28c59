"""Bolt's ``authorize`` with strict scoping.

Bolt gives ``authorize`` only ids it parsed from the body, which is not proof
of anything to a service that holds every tenant's tokens. So
:class:`TokenkeepRequestCapture` (Bolt's ``before_authorize`` middleware) puts
the raw request (body, ``X-Slack-Request-Timestamp``, ``X-Slack-Signature``) into
Bolt's request context, and :class:`TokenkeepAuthorize` sends exactly that to
tokenkeep, which checks the signature with the signing secret and picks the
tenant from the signed body itself.

Bolt skips ``authorize`` for ``app_uninstalled`` and ``tokens_revoked``; the
capture middleware forwards those signed requests to tokenkeep itself, which
applies them (purge / delete) exactly as its own ``/slack/events`` does. Don't
also call ``app.enable_token_revocation_listeners()``; do subscribe a listener to
both events (even a no-op) so Bolt acknowledges them instead of answering 404.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.authorize import Authorize
from slack_bolt.context import BoltContext
from slack_bolt.middleware import Middleware
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse

from .client import NotInstalled, TokenkeepClient, TokenkeepError

logger = logging.getLogger("tokenkeep_bolt")

#: Where the capture middleware leaves the raw request in Bolt's context.
RAW_REQUEST_KEY = "tokenkeep_raw_request"

_LIFECYCLE_EVENTS = ("app_uninstalled", "tokens_revoked")


def _header(req: BoltRequest, name: str) -> Optional[str]:
    values = req.headers.get(name) or []
    # Two copies of a signed header: which one was signed is ambiguous.
    return values[0] if len(values) == 1 else None


class TokenkeepRequestCapture(Middleware):
    """``before_authorize``: keeps the raw signed request for :class:`TokenkeepAuthorize`."""

    def __init__(self, client: TokenkeepClient):
        self.client = client

    def process(self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]) -> BoltResponse:
        raw = {
            "body": req.raw_body,
            "timestamp": _header(req, "x-slack-request-timestamp") or "",
            "signature": _header(req, "x-slack-signature") or "",
        }
        req.context[RAW_REQUEST_KEY] = raw
        body = req.body if isinstance(req.body, dict) else {}
        event_type = (body.get("event") or {}).get("type") if body.get("type") == "event_callback" else None
        if event_type not in _LIFECYCLE_EVENTS:
            return next()
        try:
            self.client.authorize(**raw)
        except NotInstalled:
            pass  # applied: the tenant has nothing left
        except TokenkeepError as e:
            logger.error("tokenkeep could not apply %s: %s", event_type, e)
            if e.status is None or e.status >= 500:
                # Slack retries a non-2xx, so the purge is not lost.
                return BoltResponse(status=503, body="")
        # The app's own listeners still run (Bolt answers 404 to an event nobody listens to).
        return next()


class TokenkeepAuthorize(Authorize):
    """Bolt's ``authorize``: the tokens tokenkeep gives for this signed request, or ``None``
    (Bolt's own "no installation" behaviour) when tokenkeep holds none or the
    request is not genuinely Slack's."""

    def __init__(self, client: TokenkeepClient):
        self.client = client

    def __call__(
        self,
        *,
        context: BoltContext,
        enterprise_id: Optional[str],
        team_id: Optional[str],
        user_id: Optional[str],
        **_actor_ids: Any,
    ) -> Optional[AuthorizeResult]:
        raw: Optional[Dict[str, str]] = context.get(RAW_REQUEST_KEY)
        if raw is None:
            logger.error("tokenkeep authorize: no raw request in the context; add TokenkeepRequestCapture as before_authorize")
            return None
        try:
            answer = self.client.authorize(**raw)
        except NotInstalled:
            logger.info("tokenkeep: no installation for this request's tenant")
            return None
        except TokenkeepError as e:
            if e.code == "invalid_slack_signature" or e.code == "invalid_request":
                logger.warning("tokenkeep refused the request: %s", e)
                return None
            raise
        return AuthorizeResult(
            enterprise_id=answer.get("enterprise_id"),
            team_id=answer.get("team_id"),
            team=answer.get("team_name"),
            bot_token=answer.get("bot_token"),
            bot_id=answer.get("bot_id"),
            bot_user_id=answer.get("bot_user_id"),
            bot_scopes=answer.get("bot_scopes"),
            user_id=answer.get("user_id") or user_id,
            user_token=answer.get("user_token"),
            user_scopes=answer.get("user_scopes"),
        )


def bolt_app_kwargs(client: TokenkeepClient) -> Dict[str, Any]:
    """What ``App(...)`` needs for strict scoping: ``App(signing_secret=…, **bolt_app_kwargs(client))``.

    Works with or without ``oauth_settings``; Bolt's own token rotation never
    runs (it lives in Bolt's ``InstallationStoreAuthorize``, which this replaces,
    and tokenkeep never hands out a refresh token)."""
    return {"before_authorize": TokenkeepRequestCapture(client), "authorize": TokenkeepAuthorize(client)}
