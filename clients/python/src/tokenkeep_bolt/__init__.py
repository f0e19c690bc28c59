"""Bolt for Python on tokenkeep.

- :class:`TokenkeepClient`: the token service's HTTP client (dev key locally,
  SigV4 in AWS; timeouts, bounded retries, errors that never carry a token).
- :class:`TokenkeepAuthorize` + :class:`TokenkeepRequestCapture`: Bolt's
  ``authorize`` with strict scoping. The capture middleware (``before_authorize``)
  puts the raw signed request into Bolt's request context; ``authorize`` hands it
  to tokenkeep, which verifies it and resolves the tenant itself.
- :class:`TokenkeepInstallationStore`: slack_sdk's ``InstallationStore`` for
  Bolt's own OAuth flow (``save`` seals the installation in tokenkeep) and for
  workers with the named-tenant permission (``find_*`` with tokens, ``delete_*``).

Token rotation stays inside tokenkeep: this package never sees a refresh token
and never refreshes.
"""

from .client import NotInstalled, TokenkeepClient, TokenkeepError
from .bolt import RAW_REQUEST_KEY, TokenkeepAuthorize, TokenkeepRequestCapture, bolt_app_kwargs
from .store import TokenkeepInstallationStore

__all__ = [
    "NotInstalled",
    "RAW_REQUEST_KEY",
    "TokenkeepAuthorize",
    "TokenkeepClient",
    "TokenkeepError",
    "TokenkeepInstallationStore",
    "TokenkeepRequestCapture",
    "bolt_app_kwargs",
]
