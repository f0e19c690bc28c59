"""The stack the adapter tests run against: the fake Slack as a process
(`fake_slack` example) and the real `tokenkeep dev` binary, both on loopback,
on a fresh data dir. Paths come from TOKENKEEP_BIN / FAKE_SLACK_BIN (set by
clients/test.sh), else target/debug of the repository."""

from __future__ import annotations

import atexit
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SIGNING_SECRET = "adapter-test-signing-secret"
CLIENT_ID = "1111.2222"
CLIENT_SECRET = "fake-client-secret"
# Tokens live 90 s; the refresh window is 1 minute, so a token is due 30 s after
# it was issued and expired after 90 s (tests wait for "due", not "expired").
TOKEN_LIFETIME_SECS = 90
DUE_AFTER_SECS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sign(body: str, timestamp: Optional[int] = None, secret: str = SIGNING_SECRET) -> Dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"x-slack-request-timestamp": ts, "x-slack-signature": f"v0={mac}", "content-type": "application/json"}


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class Stack:
    def __init__(self) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="tokenkeep-bolt-")
        fake_bin = os.environ.get("FAKE_SLACK_BIN", os.path.join(ROOT, "target", "debug", "examples", "fake_slack"))
        tk_bin = os.environ.get("TOKENKEEP_BIN", os.path.join(ROOT, "target", "debug", "tokenkeep"))
        env = dict(os.environ, FAKE_SLACK_TOKEN_LIFETIME_SECS=str(TOKEN_LIFETIME_SECS))
        self.fake = subprocess.Popen([fake_bin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        urls = json.loads(self.fake.stdout.readline())
        self.api_url: str = urls["api_url"]
        self.control_url: str = urls["control_url"]

        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(
            os.environ,
            SLACK_CLIENT_ID=CLIENT_ID,
            SLACK_CLIENT_SECRET=CLIENT_SECRET,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=self.api_url,
            TOKENKEEP_STORE="embedded",
            TOKENKEEP_DATA_DIR=self.data_dir,
            TOKENKEEP_REFRESH_WINDOW_MINUTES="1",
            RUST_LOG=os.environ.get("RUST_LOG", "warn"),
        )
        self.log_path = os.path.join(self.data_dir, "dev.log")
        self._log = open(self.log_path, "wb")
        # The sweep is pushed out so only requests refresh (the tests count refreshes).
        self.dev = subprocess.Popen(
            [tk_bin, "dev", "--listen", f"127.0.0.1:{port}", "--sweep-every", "3600"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        # Whatever happens to the test run, don't leave the two processes behind.
        atexit.register(self._kill)
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if self.dev.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"tokenkeep dev did not start; see {self.log_path}")
                time.sleep(0.05)
        with open(os.path.join(self.data_dir, "token-service.key"), encoding="ascii") as f:
            self.dev_key = f.read().strip()
        with open(os.path.join(self.data_dir, "token-service-jobs.key"), encoding="ascii") as f:
            self.jobs_key = f.read().strip()

    def _kill(self) -> None:
        for proc in (self.dev, self.fake):
            if proc.poll() is None:
                proc.kill()

    def close(self) -> None:
        self.dev.terminate()
        self.dev.wait(timeout=10)
        self._log.close()
        self.fake.stdin.close()
        self.fake.wait(timeout=10)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # ---- the fake's control API ----------------------------------------------------

    def _control(self, method: str, path: str, body: Optional[dict] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.control_url + path, data=data, method=method, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def add_code(self, code: str, team_id: str, **extra: Any) -> None:
        self._control("POST", "/control/install", {"code": code, "team_id": team_id, **extra})

    def posts(self) -> List[Dict[str, Any]]:
        return self._control("GET", "/control/state")["posts"]

    def refreshes(self, team_id: str) -> int:
        return self._control("GET", f"/control/state?teams={team_id}")["refreshes_by_team"][team_id]

    def token_active(self, token: str) -> bool:
        return self._control("POST", "/control/token_active", {"token": token})["active"]

    # ---- tokenkeep's own OAuth flow ---------------------------------------------------

    def install_via_tokenkeep(self, team_id: str) -> None:
        code = f"tk-code-{team_id}"
        self.add_code(code, team_id)
        parsed = urllib.parse.urlparse(self.url)
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=5)
        conn.request("GET", "/slack/install")
        resp = conn.getresponse()
        resp.read()
        assert resp.status in (302, 303, 307), resp.status
        state = urllib.parse.parse_qs(urllib.parse.urlparse(resp.getheader("location")).query)["state"][0]
        cookie = resp.getheader("set-cookie").split(";")[0]
        conn.request("GET", f"/slack/oauth_redirect?code={code}&state={state}", headers={"cookie": cookie})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 200, f"oauth_redirect answered {resp.status}"

    def raw_store_bytes(self) -> bytes:
        """Every byte the embedded store holds on disk (SQLite file and its journal)."""
        out = b""
        for name in os.listdir(self.data_dir):
            if name.startswith("store.db"):
                with open(os.path.join(self.data_dir, name), "rb") as f:
                    out += f.read()
        return out


def mention(team_id: str, user: str = "U0001", text: str = "hello") -> str:
    return json.dumps(
        {
            "type": "event_callback",
            "team_id": team_id,
            "api_app_id": "A0001",
            "event_id": f"Ev{time.time_ns()}",
            "event_time": int(time.time()),
            "authorizations": [{"team_id": team_id, "user_id": "UBOT", "is_bot": True, "is_enterprise_install": False}],
            "event": {"type": "app_mention", "user": user, "text": f"<@UBOT> {text}", "channel": "C1", "ts": "1.2"},
        }
    )


def uninstalled(team_id: str) -> str:
    return json.dumps(
        {
            "type": "event_callback",
            "team_id": team_id,
            "api_app_id": "A0001",
            "event_id": f"EvU{time.time_ns()}",
            "event_time": int(time.time()),
            "event": {"type": "app_uninstalled"},
        }
    )
