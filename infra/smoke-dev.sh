#!/usr/bin/env bash
# The README's run command, as a newcomer types it: reads the command from the
# README's "Run it" block (so the two can't drift), runs it with dummy Slack
# credentials on a free loopback port and a fresh data dir, checks that the
# install route redirects to Slack and that an unsigned event is refused, then
# stops it with SIGTERM and expects a clean exit. Part of infra/test.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

# The README's block: a line of VAR=... assignments ending in `\`, then the command.
RUN_LINE="$(awk '/^## Run it/{inrun=1} inrun && /^  cargo run /{sub(/^  /, ""); print; exit}' README.md)"
if [[ "$RUN_LINE" != "cargo run --release -p tokenkeep -- dev" ]]; then
  echo "README's run command changed to '$RUN_LINE': update infra/smoke-dev.sh with it" >&2
  exit 1
fi

WORK="$(mktemp -d)"
PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
LOG="$WORK/dev.log"
PID=
finish() {
  if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap finish EXIT

echo "==> $RUN_LINE --listen 127.0.0.1:$PORT"
# Only what the README asks for; the embedded store and local key file are the default.
env -u TOKENKEEP_STORE -u AWS_ENDPOINT_URL \
  SLACK_CLIENT_ID=smoke.client SLACK_CLIENT_SECRET=smoke-client-secret \
  SLACK_SIGNING_SECRET=smoke-signing-secret TOKENKEEP_DATA_DIR="$WORK/data" \
  $RUN_LINE --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
PID=$!

# The first run builds the release binary: allow for it.
for _ in $(seq 1 1800); do
  if grep -q "listening on http://127.0.0.1:$PORT" "$LOG"; then break; fi
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "tokenkeep dev exited before listening:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
  sleep 1
done
grep -q "listening on http://127.0.0.1:$PORT" "$LOG" || { echo "tokenkeep dev never listened" >&2; tail -n 40 "$LOG" >&2; exit 1; }

"$PYTHON" - "$PORT" <<'PY'
import sys, urllib.request, urllib.error
base = f"http://127.0.0.1:{sys.argv[1]}"

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

opener = urllib.request.build_opener(NoRedirect)
def status(req):
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers

code, headers = status(urllib.request.Request(f"{base}/slack/install"))
assert code == 302, f"install answered {code}"
location = headers.get("Location", "")
assert location.startswith("https://slack.com/oauth/v2/authorize?"), "install does not redirect to Slack"
assert "client_id=smoke.client" in location and "state=" in location, "redirect lacks client_id/state"
code, _ = status(urllib.request.Request(f"{base}/slack/events", data=b'{"type":"url_verification","challenge":"x"}',
                                        headers={"Content-Type": "application/json"}, method="POST"))
assert code == 401, f"unsigned event answered {code}"
print("==> install redirects to Slack; an unsigned event is refused (401)")
PY

kill -TERM "$PID"
if ! wait "$PID"; then
  echo "tokenkeep dev did not exit cleanly on SIGTERM:" >&2
  tail -n 40 "$LOG" >&2
  exit 1
fi
PID=
grep -q "tokenkeep dev stopped" "$LOG" || { echo "no clean stop message" >&2; exit 1; }
if grep -q -e smoke-client-secret -e smoke-signing-secret "$LOG"; then
  echo "a secret reached tokenkeep dev's output" >&2
  exit 1
fi
echo "==> README run command: OK"
