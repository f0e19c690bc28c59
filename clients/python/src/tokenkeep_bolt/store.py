"""slack_sdk's ``InstallationStore`` backed by tokenkeep.

``save`` hands the installation Bolt's own OAuth flow produced to tokenkeep,
which asks Slack (``auth.test``) whose token it is and seals it. ``find_*``
return metadata to any caller, and tokens only to callers holding the
named-tenant permission (workers, cron jobs; ``named_tenant=True``). Refresh
tokens never leave tokenkeep, so nothing on the Bolt side can rotate.
``delete_*`` need the named-tenant permission too.
"""

from __future__ import annotations

import logging
from logging import Logger
from typing import Any, Dict, Optional

from slack_sdk.oauth.installation_store import Bot, Installation, InstallationStore

from .client import TokenkeepClient, TokenkeepError


def _expires_at(value: Any) -> Optional[int]:
    return int(value) if value else None


def installation_to_wire(i: Installation) -> Dict[str, Any]:
    """slack_sdk's Installation as the token service's JSON."""
    wire: Dict[str, Any] = {
        "app_id": i.app_id,
        "enterprise_id": i.enterprise_id,
        "enterprise_name": i.enterprise_name,
        "enterprise_url": i.enterprise_url,
        "team_id": i.team_id,
        "team_name": i.team_name,
        "is_enterprise_install": bool(i.is_enterprise_install),
        "token_type": i.token_type,
    }
    if i.bot_token:
        wire["bot"] = {
            "token": i.bot_token,
            "refresh_token": i.bot_refresh_token,
            "expires_at": _expires_at(i.bot_token_expires_at),
            "scopes": list(i.bot_scopes or []),
            "id": i.bot_id,
            "user_id": i.bot_user_id,
        }
    if i.user_id:
        wire["user"] = {
            "id": i.user_id,
            "token": i.user_token,
            "refresh_token": i.user_refresh_token,
            "expires_at": _expires_at(i.user_token_expires_at),
            "scopes": list(i.user_scopes or []),
        }
    if i.incoming_webhook_url:
        wire["incoming_webhook"] = {
            "url": i.incoming_webhook_url,
            "channel": i.incoming_webhook_channel,
            "channel_id": i.incoming_webhook_channel_id,
            "configuration_url": i.incoming_webhook_configuration_url,
        }
    return wire


def _installed_at(found: Dict[str, Any]) -> Optional[float]:
    # slack_sdk takes a float (or datetime/str), not an int.
    value = found.get("installed_at")
    return float(value) if value is not None else None


class TokenkeepInstallationStore(InstallationStore):
    def __init__(self, client: TokenkeepClient, *, named_tenant: bool = False, logger: Optional[Logger] = None):
        self.client = client
        self.named_tenant = named_tenant
        self._logger = logger or logging.getLogger("tokenkeep_bolt")

    def __repr__(self) -> str:
        return f"TokenkeepInstallationStore(client={self.client!r}, named_tenant={self.named_tenant})"

    @property
    def logger(self) -> Logger:
        return self._logger

    # ---- save -------------------------------------------------------------------

    def save(self, installation: Installation):
        self.client.store_installation(installation_to_wire(installation))

    def save_bot(self, bot: Bot):
        self.client.store_installation(
            {
                "app_id": bot.app_id,
                "enterprise_id": bot.enterprise_id,
                "enterprise_name": bot.enterprise_name,
                "team_id": bot.team_id,
                "team_name": bot.team_name,
                "is_enterprise_install": bool(bot.is_enterprise_install),
                "token_type": "bot",
                "bot": {
                    "token": bot.bot_token,
                    "refresh_token": bot.bot_refresh_token,
                    "expires_at": _expires_at(bot.bot_token_expires_at),
                    "scopes": list(bot.bot_scopes or []),
                    "id": bot.bot_id,
                    "user_id": bot.bot_user_id,
                },
            }
        )

    # ---- find -------------------------------------------------------------------

    def _query(self, enterprise_id, team_id, is_enterprise_install, user_id=None) -> Dict[str, Any]:
        return {
            "enterprise_id": enterprise_id,
            "team_id": team_id,
            "is_enterprise_install": bool(is_enterprise_install),
            "user_id": user_id,
            "include_tokens": self.named_tenant,
        }

    def find_bot(
        self,
        *,
        enterprise_id: Optional[str],
        team_id: Optional[str],
        is_enterprise_install: Optional[bool] = False,
    ) -> Optional[Bot]:
        if not self.named_tenant:
            # A Bot without its token would mislead Bolt; strict scoping goes through authorize.
            raise TokenkeepError("find_bot", "needs_named_tenant_permission")
        found = self.client.find_bot(self._query(enterprise_id, team_id, is_enterprise_install))
        if found is None or not found.get("token"):
            return None
        return Bot(
            app_id=found.get("app_id"),
            enterprise_id=found.get("enterprise_id"),
            enterprise_name=found.get("enterprise_name"),
            team_id=found.get("team_id"),
            team_name=found.get("team_name"),
            bot_token=found["token"],
            bot_id=found.get("bot_id"),
            bot_user_id=found.get("bot_user_id"),
            bot_scopes=found.get("bot_scopes") or [],
            bot_token_expires_at=found.get("token_expires_at"),
            is_enterprise_install=found.get("is_enterprise_install"),
            installed_at=_installed_at(found),
        )

    def find_installation(
        self,
        *,
        enterprise_id: Optional[str],
        team_id: Optional[str],
        user_id: Optional[str] = None,
        is_enterprise_install: Optional[bool] = False,
    ) -> Optional[Installation]:
        found = self.client.find_installation(self._query(enterprise_id, team_id, is_enterprise_install, user_id))
        if found is None:
            return None
        is_user = found.get("kind") == "user"
        token = found.get("token")
        return Installation(
            app_id=found.get("app_id"),
            enterprise_id=found.get("enterprise_id"),
            enterprise_name=found.get("enterprise_name"),
            enterprise_url=found.get("enterprise_url"),
            team_id=found.get("team_id"),
            team_name=found.get("team_name"),
            bot_token=None if is_user else token,
            bot_id=found.get("bot_id"),
            bot_user_id=found.get("bot_user_id"),
            bot_scopes=found.get("bot_scopes") or [],
            bot_token_expires_at=None if is_user else found.get("token_expires_at"),
            user_id=found.get("user_id") if is_user else (found.get("installer_user_id") or ""),
            user_token=token if is_user else None,
            user_scopes=found.get("user_scopes") or [],
            user_token_expires_at=found.get("token_expires_at") if is_user else None,
            incoming_webhook_channel=found.get("incoming_webhook_channel"),
            incoming_webhook_channel_id=found.get("incoming_webhook_channel_id"),
            is_enterprise_install=found.get("is_enterprise_install"),
            installed_at=_installed_at(found),
        )

    # ---- delete (named-tenant permission) -----------------------------------------

    def delete_bot(self, *, enterprise_id: Optional[str], team_id: Optional[str]) -> None:
        self.client.delete({"enterprise_id": enterprise_id, "team_id": team_id, "scope": "bot"})

    def delete_installation(
        self, *, enterprise_id: Optional[str], team_id: Optional[str], user_id: Optional[str] = None
    ) -> None:
        if user_id is None:
            self.delete_all(enterprise_id=enterprise_id, team_id=team_id)
        else:
            self.client.delete({"enterprise_id": enterprise_id, "team_id": team_id, "user_id": user_id, "scope": "user"})

    def delete_all(self, *, enterprise_id: Optional[str], team_id: Optional[str]):
        self.client.delete({"enterprise_id": enterprise_id, "team_id": team_id, "scope": "all"})
