#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one. Needs only Rust (rustup,
# stable, with rustfmt and clippy), Python 3.11 with pip and Node 20 with npm; everything else is
# installed by this script under .tools/ (git-ignored) or into the cargo registry:
#   0. `cargo fmt --all --check` (formatting is part of the suite, as clippy is),
#   1. `cargo fetch --locked`: every crate of Cargo.lock into the registry cache,
#      so the offline steps below never depend on what a machine happened to hold,
#   2. installs the local AWS emulator (moto's server, .tools/moto-venv) if missing,
#      starts it on a free loopback port and points the AWS SDK at it,
#   3. template checks (cfn-lint, sam validate --lint, checkov),
#   4. `cargo deny check licenses bans sources` offline (deny.toml; cargo-deny is
#      installed into .tools/cargo from crates.io if missing),
#   5. `cargo clippy --workspace --all-targets -- -D warnings`,
#   6. `cargo test --workspace` (DynamoDB + KMS tests hit the emulator),
#      then the Bolt adapter tests (clients/test.sh: Bolt for Python and for
#      JavaScript, pinned, against `tokenkeep dev` and the fake Slack),
#   7. the README's run command (`infra/smoke-dev.sh`): builds and starts
#      `tokenkeep dev` exactly as the README says and checks it serves,
#   and stops the emulator by its PID, whatever happened.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="$ROOT/.tools"
PYTHON="${PYTHON:-python3}"
MOTO_VENV="$TOOLS/moto-venv"
MOTO_VERSION=5.2.5
CARGO_DENY_VERSION=0.18.9

step() { echo "==> [$((SECONDS / 60))m$((SECONDS % 60))s] $*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo fetch --locked"
cargo fetch --locked --quiet

if [[ ! -f "$MOTO_VENV/.installed" ]] || ! "$MOTO_VENV/bin/python" -c "import moto" >/dev/null 2>&1; then
  step "installing moto[server]==$MOTO_VERSION into .tools/moto-venv"
  "$PYTHON" -m venv --clear "$MOTO_VENV"
  "$MOTO_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  touch "$MOTO_VENV/.installed"
fi

PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
mkdir -p target
# moto behind one lock (infra/emulator.py says why).
"$MOTO_VENV/bin/python" infra/emulator.py 127.0.0.1 "$PORT" >target/moto.log 2>&1 &
MOTO_PID=$!
cleanup() { kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  if "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/moto-api/')" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$MOTO_PID" 2>/dev/null; then
    echo "moto_server exited; see target/moto.log" >&2
    exit 1
  fi
  sleep 0.2
done
step "AWS emulator (moto) on 127.0.0.1:$PORT"

# Only the emulator: dummy credentials, no instance metadata lookups, one region.
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_SESSION_TOKEN=
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE

step "template checks"
bash infra/check-template.sh

CARGO_DENY="$TOOLS/cargo/bin/cargo-deny"
if [[ ! -x "$CARGO_DENY" ]] || ! "$CARGO_DENY" --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  step "installing cargo-deny $CARGO_DENY_VERSION into .tools/cargo"
  # Its release profile is fat LTO with one codegen unit (minutes on two cores);
  # a checker run once per test run needs none of that.
  CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install --locked --quiet "cargo-deny@$CARGO_DENY_VERSION" --root "$TOOLS/cargo"
fi
step "cargo deny check licenses bans sources (offline)"
# Offline: the dependency graph comes from Cargo.lock and the registry cache filled
# by `cargo fetch` above; advisories (which need the advisory database) are not
# checked here.
"$CARGO_DENY" --log-level error --offline check licenses bans sources

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked --offline -- -D warnings

step "cargo test --workspace"
cargo test --workspace --locked --offline "$@"

step "Bolt adapters (clients/test.sh)"
bash clients/test.sh

step "README run command (infra/smoke-dev.sh)"
bash infra/smoke-dev.sh

step "all checks passed"
