"""Bolt for Python (slack_bolt from PyPI) on tokenkeep: the real framework,
the real `tokenkeep dev` binary and the fake Slack, all on loopback.

Requests reach the Bolt app through `App.dispatch` with a `BoltRequest`, which
is what every Bolt HTTP adapter calls; Bolt's listeners answer through
`say`, i.e. chat.postMessage on the fake Slack, which records which
installation's token each post used.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App, BoltRequest
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_sdk import WebClient
from slack_sdk.oauth.state_store import FileOAuthStateStore

from tokenkeep_bolt import (
    NotInstalled,
    TokenkeepAuthorize,
    TokenkeepClient,
    TokenkeepError,
    TokenkeepInstallationStore,
    bolt_app_kwargs,
)
from tokenkeep_bolt.bolt import RAW_REQUEST_KEY

import stack as s

STACK: s.Stack
ROTATING_TEAM = "TROT1"
ROTATING_INSTALLED_AT = 0.0

logging.basicConfig(level=logging.WARNING)


def setUpModule():
    global STACK, ROTATING_INSTALLED_AT
    for name in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
        os.environ.pop(name, None)  # Bolt would load its default OAuth settings from them
    STACK = s.Stack()
    # Installed first so its token is due by the time the rotation test runs (last).
    STACK.install_via_tokenkeep(ROTATING_TEAM)
    ROTATING_INSTALLED_AT = time.time()


def tearDownModule():
    STACK.close()


def client(key=None) -> TokenkeepClient:
    return TokenkeepClient(STACK.url, dev_key=key or STACK.dev_key, timeout=5, max_attempts=2)


class RecordingStore(TokenkeepInstallationStore):
    """Keeps what Bolt's OAuth flow handed to `save`, so the test can look for it in the raw table."""

    saved = None

    def save(self, installation):
        RecordingStore.saved = installation
        super().save(installation)


def make_app(*, oauth_store=None, request_verification=True) -> App:
    oauth_settings = None
    if oauth_store is not None:
        oauth_settings = OAuthSettings(
            client_id=s.CLIENT_ID,
            client_secret=s.CLIENT_SECRET,
            scopes=["chat:write", "app_mentions:read"],
            installation_store=oauth_store,
            state_store=FileOAuthStateStore(expiration_seconds=600, base_dir=tempfile.mkdtemp()),
            # Bolt would rotate with its own refresher here, if it ever had a refresh token.
            token_rotation_expiration_minutes=120,
        )
    app = App(
        signing_secret=s.SIGNING_SECRET,
        client=WebClient(base_url=STACK.api_url + "/"),
        oauth_settings=oauth_settings,
        request_verification_enabled=request_verification,
        process_before_response=True,
        **bolt_app_kwargs(client()),
    )

    @app.event("app_mention")
    def answer(event, say, context):
        say(f"hi from {context.team_id}")

    @app.event("app_uninstalled")
    @app.event("tokens_revoked")
    def lifecycle():
        pass  # tokenkeep applied it already (the capture middleware forwarded it)

    return app


def dispatch(app: App, body: str, headers=None):
    return app.dispatch(BoltRequest(body=body, headers=headers or s.sign(body)))


def posts_for(team_id: str):
    # The Bolt app's posts only: `tokenkeep dev` runs the example app, whose
    # install hook DMs the installing user (a channel named by a user id).
    return [p for p in STACK.posts() if p["team_id"] == team_id and not p["channel"].startswith("U")]


class BoltOnTokenkeep(unittest.TestCase):
    def test_app_mention_is_answered_with_the_tenants_token_from_tokenkeep(self):
        # Given a tenant installed through tokenkeep's own OAuth.
        STACK.install_via_tokenkeep("TMEN1")
        app = make_app()
        # When Slack delivers an app_mention to the Bolt app.
        resp = dispatch(app, s.mention("TMEN1"))
        # Then the listener answered with TMEN1's token, which Slack accepted.
        self.assertEqual(resp.status, 200)
        posts = posts_for("TMEN1")
        self.assertEqual(len(posts), 1)
        self.assertEqual(posts[0]["text"], "hi from TMEN1")

    def test_a_request_signed_for_tenant_a_cannot_obtain_bs_token(self):
        STACK.install_via_tokenkeep("TA1")
        STACK.install_via_tokenkeep("TB1")
        # Even with Bolt's own signature check off, tokenkeep's holds.
        app = make_app(request_verification=False)
        body = s.mention("TA1")
        headers = s.sign(body)
        moved = body.replace('"TA1"', '"TB1"')
        before = len(posts_for("TB1"))
        dispatch(app, moved, headers)
        self.assertEqual(len(posts_for("TB1")), before, "no post with B's token")
        with self.assertRaises(TokenkeepError) as refused:
            client().authorize(moved, headers["x-slack-request-timestamp"], headers["x-slack-signature"])
        self.assertEqual(refused.exception.code, "invalid_slack_signature")
        # A's own request gets A's token only.
        dispatch(app, body, headers)
        self.assertEqual([p["text"] for p in posts_for("TA1")], ["hi from TA1"])

    def test_forged_stale_or_replayed_requests_obtain_nothing(self):
        STACK.install_via_tokenkeep("TFORGE1")
        app = make_app(request_verification=False)
        body = s.mention("TFORGE1")
        for what, headers in [
            ("forged", s.sign(body, secret="not-the-signing-secret")),
            ("stale", s.sign(body, timestamp=int(time.time()) - 360)),
            ("replayed outside the window", s.sign(body, timestamp=int(time.time()) + 360)),
        ]:
            dispatch(app, body, headers)
            self.assertEqual(posts_for("TFORGE1"), [], what)
            with self.assertRaises(TokenkeepError) as refused:
                client().authorize(body, headers["x-slack-request-timestamp"], headers["x-slack-signature"])
            self.assertEqual(refused.exception.code, "invalid_slack_signature", what)
            self.assertNotIn("xox", str(refused.exception), what)

    def test_unknown_tenant_gets_bolts_no_installation_behaviour(self):
        app = make_app()
        resp = dispatch(app, s.mention("TNOPE1"))
        self.assertEqual(posts_for("TNOPE1"), [])
        self.assertIn("no longer available", resp.body)  # Bolt's own "no installation" answer
        body = s.mention("TNOPE1")
        h = s.sign(body)
        with self.assertRaises(NotInstalled):
            client().authorize(body, h["x-slack-request-timestamp"], h["x-slack-signature"])
        jobs = TokenkeepInstallationStore(client(STACK.jobs_key), named_tenant=True)
        self.assertIsNone(jobs.find_installation(enterprise_id=None, team_id="TNOPE1"))

    def test_unauthenticated_calls_are_refused_and_write_nothing(self):
        stranger = TokenkeepClient(STACK.url, dev_key="0" * 64, max_attempts=1)
        body = s.mention(ROTATING_TEAM)
        h = s.sign(body)
        with self.assertRaises(TokenkeepError) as refused:
            stranger.authorize(body, h["x-slack-request-timestamp"], h["x-slack-signature"])
        self.assertEqual((refused.exception.status, refused.exception.code), (401, "unauthorized"))
        store = TokenkeepInstallationStore(stranger)
        from slack_sdk.oauth.installation_store import Installation

        with self.assertRaises(TokenkeepError) as refused:
            store.save(Installation(team_id="TSTRANGE1", user_id="U1", bot_token="xoxb-stranger", bot_scopes=["chat:write"]))
        self.assertEqual(refused.exception.status, 401)
        self.assertNotIn("xoxb-stranger", repr(refused.exception) + str(refused.exception))
        jobs = TokenkeepInstallationStore(client(STACK.jobs_key), named_tenant=True)
        self.assertIsNone(jobs.find_installation(enterprise_id=None, team_id="TSTRANGE1"))

    def test_after_app_uninstalled_the_bolt_app_gets_no_token(self):
        STACK.install_via_tokenkeep("TUN1")
        app = make_app()
        dispatch(app, s.mention("TUN1"))
        self.assertEqual(len(posts_for("TUN1")), 1)
        # Slack tells the Bolt app; the adapter forwards the signed event to tokenkeep.
        self.assertEqual(dispatch(app, s.uninstalled("TUN1")).status, 200)
        dispatch(app, s.mention("TUN1"))
        self.assertEqual(len(posts_for("TUN1")), 1, "no token after app_uninstalled")
        jobs = TokenkeepInstallationStore(client(STACK.jobs_key), named_tenant=True)
        self.assertIsNone(jobs.find_installation(enterprise_id=None, team_id="TUN1"))

    def test_an_installation_from_bolts_own_oauth_flow_is_sealed_and_served(self):
        store = RecordingStore(client())
        app = make_app(oauth_store=store)
        flow = app.oauth_flow
        # Bolt's install page issues a state (and its cookie) ...
        start = flow.handle_installation(BoltRequest(body="", query={}, headers={}))
        cookie = start.headers["set-cookie"][0].split(";")[0]
        state = cookie.split("=", 1)[1]
        # ... Slack redirects back with a code; Bolt exchanges it and saves through the adapter.
        STACK.add_code("bolt-code-TBOLT1", "TBOLT1")
        done = flow.handle_callback(
            BoltRequest(body="", query={"code": "bolt-code-TBOLT1", "state": state}, headers={"cookie": [cookie]})
        )
        self.assertEqual(done.status, 200, done.body)
        saved = RecordingStore.saved
        self.assertTrue(saved.bot_token and saved.bot_refresh_token)

        # Sealed: neither token is anywhere in the store's files.
        raw = STACK.raw_store_bytes()
        self.assertNotIn(saved.bot_token.encode(), raw)
        self.assertNotIn(saved.bot_refresh_token.encode(), raw)

        # Served: a mention is answered with exactly that token.
        dispatch(app, s.mention("TBOLT1"))
        posts = posts_for("TBOLT1")
        self.assertEqual(len(posts), 1)
        self.assertEqual(posts[0]["token_fingerprint"], s.fingerprint(saved.bot_token))

        # A worker with the named-tenant permission gets the token, never the refresh token.
        jobs = TokenkeepInstallationStore(client(STACK.jobs_key), named_tenant=True)
        found = jobs.find_installation(enterprise_id=None, team_id="TBOLT1")
        self.assertEqual(found.bot_token, saved.bot_token)
        self.assertIsNone(found.bot_refresh_token)
        # Without it, metadata only.
        meta = TokenkeepInstallationStore(client()).find_installation(enterprise_id=None, team_id="TBOLT1")
        self.assertIsNone(meta.bot_token)
        self.assertEqual(meta.team_id, "TBOLT1")
        self.assertNotIn(saved.bot_token, repr(store) + repr(client()))

    def test_authorize_without_the_capture_middleware_finds_nothing(self):
        # Defends against wiring authorize alone: no raw request, no token.
        from slack_bolt.context import BoltContext

        result = TokenkeepAuthorize(client())(context=BoltContext(), enterprise_id=None, team_id=ROTATING_TEAM, user_id="U0001")
        self.assertIsNone(result)
        self.assertNotIn(RAW_REQUEST_KEY, BoltContext())

    def test_z_32_concurrent_requests_on_an_expiring_token_cause_exactly_one_refresh(self):
        # Bolt's own rotation is configured (token_rotation_expiration_minutes) and must not run.
        app = make_app(oauth_store=TokenkeepInstallationStore(client()))
        # Bolt's rotator lives in its InstallationStoreAuthorize; ours replaced it.
        self.assertIsInstance(app._authorize, TokenkeepAuthorize)
        wait = ROTATING_INSTALLED_AT + s.DUE_AFTER_SECS + 1 - time.time()
        if wait > 0:
            time.sleep(wait)
        self.assertEqual(STACK.refreshes(ROTATING_TEAM), 0)

        # The first request alone: its token was read before any refresh began, so its
        # post names the old token (under concurrency, posts reach Slack in any order).
        self.assertEqual(dispatch(app, s.mention(ROTATING_TEAM, text="n0")).status, 200)
        old_token = posts_for(ROTATING_TEAM)[0]["token_fingerprint"]
        bodies = [s.mention(ROTATING_TEAM, text=f"n{i}") for i in range(1, 32)]
        with ThreadPoolExecutor(max_workers=31) as pool:
            statuses = list(pool.map(lambda b: dispatch(app, b).status, bodies))
        self.assertEqual(statuses, [200] * 31)
        self.assertEqual(len(posts_for(ROTATING_TEAM)), 32, "every request answered with a valid token")

        # The refresh runs after the answers (the token was due, not expired): wait for it.
        deadline = time.time() + 10
        while STACK.refreshes(ROTATING_TEAM) == 0 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        self.assertEqual(STACK.refreshes(ROTATING_TEAM), 1, "exactly one refresh, by tokenkeep")

        # Requests during the refresh used the old (still valid) token, later ones the new one:
        # two tokens at most, and the next request uses the new one.
        burst = [p["token_fingerprint"] for p in posts_for(ROTATING_TEAM)]
        self.assertLessEqual(len(set(burst)), 2)
        dispatch(app, s.mention(ROTATING_TEAM))
        newest = posts_for(ROTATING_TEAM)[-1]["token_fingerprint"]
        self.assertNotEqual(newest, old_token, "the refreshed token is served")
        self.assertEqual(STACK.refreshes(ROTATING_TEAM), 1)

if __name__ == "__main__":
    unittest.main()
