#!/usr/bin/env bash
# The Bolt adapter tests: Bolt for Python (clients/python) and Bolt for
# JavaScript (clients/js) against the real `tokenkeep dev` binary and the fake
# Slack as a process, all on loopback. Installs the frameworks at exact pinned
# versions under .tools/ (idempotent: skipped when the pins are unchanged).
# Needs Rust, Python 3 with venv, and Node 20 with npm.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="$ROOT/.tools"
PYTHON="${PYTHON:-python3}"
VENV="$TOOLS/bolt-venv"
step() { echo "==> [clients] $*"; }

step "building tokenkeep and the fake Slack"
cargo build --locked --offline -q -p tokenkeep
cargo build --locked --offline -q -p tokenkeep-slack-api --features test-util --example fake_slack
export TOKENKEEP_BIN="$ROOT/target/debug/tokenkeep"
export FAKE_SLACK_BIN="$ROOT/target/debug/examples/fake_slack"

PY_PINS="$ROOT/clients/python/requirements-test.txt"
if [[ ! -f "$VENV/.installed" ]] || ! cmp -s "$PY_PINS" "$VENV/.installed"; then
  step "installing Bolt for Python (pinned) into .tools/bolt-venv"
  "$PYTHON" -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$PY_PINS"
  cp "$PY_PINS" "$VENV/.installed"
fi
# The package itself, from the repository path, every run (it is what is under test).
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall "$ROOT/clients/python"

step "Bolt for Python tests"
(cd "$ROOT/clients/python/tests" && "$VENV/bin/python" -m unittest -v test_client test_bolt)

if [[ -f "$ROOT/clients/js/package-lock.json" ]]; then
  JS="$ROOT/clients/js"
  if [[ ! -f "$JS/node_modules/.installed" ]] || ! cmp -s "$JS/package-lock.json" "$JS/node_modules/.installed"; then
    step "installing Bolt for JavaScript (package-lock.json) into clients/js/node_modules"
    (cd "$JS" && npm ci --no-audit --no-fund --silent)
    cp "$JS/package-lock.json" "$JS/node_modules/.installed"
  fi
  step "Bolt for JavaScript tests"
  (cd "$JS" && node --test test/sigv4.test.js test/bolt.test.js)
fi
step "adapter tests passed"
