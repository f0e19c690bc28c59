#!/usr/bin/env bash
# Checks for template.yaml: cfn-lint, `sam validate --lint`, checkov, then the
# stack tests (infra/stack-tests): the policy allowlist test and the deploy test,
# which translates the template with aws-sam-translator and creates the stack
# on moto's CloudFormation (its own moto server on a free loopback port).
#
# Needs only python3 (3.11) and pip. The tools live in venvs under .tools/
# (git-ignored) so they never touch the system Python; checkov gets its own
# venv because it pins boto3/botocore to versions aws-sam-cli rejects.
# A repeat run skips installs when each venv exists and its tools import.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TEMPLATE="${TEMPLATE:-template.yaml}"
TOOLS="$ROOT/.tools"
PYTHON="${PYTHON:-python3}"

# Keep the tools offline and quiet: no SAM telemetry, no checkov guideline fetch.
export SAM_CLI_TELEMETRY=0
export BC_SKIP_MAPPING=TRUE

# ensure_venv <dir> <python import probe> <pip requirement>...
ensure_venv() {
  local venv="$TOOLS/$1" probe="$2"
  shift 2
  # .installed is written last, so an interrupted install is redone, not trusted.
  if [[ -f "$venv/.installed" ]] && "$venv/bin/python" -c "$probe" >/dev/null 2>&1; then
    return 0
  fi
  echo "==> installing $* into .tools/$(basename "$venv")"
  "$PYTHON" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  "$venv/bin/python" -c "$probe"
  touch "$venv/.installed"
}

mkdir -p "$TOOLS"
ensure_venv cfn-venv 'import cfnlint, samcli' 'cfn-lint==1.58.0' 'aws-sam-cli==1.170.0'
ensure_venv checkov-venv 'import checkov' 'checkov==3.3.30'
# Exact pins from the requirements file; the probe fails (and the venv is
# rebuilt) when an installed version differs from its pin.
STACK_REQS="$ROOT/infra/stack-tests/requirements.txt"
STACK_PROBE="import importlib.metadata as m, re, sys
for line in open('$STACK_REQS'):
    pin = re.match(r'^([A-Za-z0-9_.-]+)(\[[^]]*\])?==(\S+)', line)
    if pin and m.version(pin[1]) != pin[3]:
        sys.exit(1)
import moto, samtranslator, boto3"
ensure_venv stack-venv "$STACK_PROBE" -r "$STACK_REQS"

# --install-only: prepare the venvs (e.g. for a CI cache) and stop.
if [[ "${1:-}" == "--install-only" ]]; then
  exit 0
fi

CFN="$TOOLS/cfn-venv/bin"
CHECKOV="$TOOLS/checkov-venv/bin"

# Versions from package metadata: asking each CLI for --version costs seconds.
version() { "$1/python" -c "import importlib.metadata as m; print(m.version('$2'))"; }

echo "==> cfn-lint $(version "$CFN" cfn-lint)"
"$CFN/cfn-lint" "$TEMPLATE"

echo "==> sam validate --lint (aws-sam-cli $(version "$CFN" aws-sam-cli))"
"$CFN/sam" validate --lint --template "$TEMPLATE" --region us-east-1

echo "==> checkov $(version "$CHECKOV" checkov)"
"$CHECKOV/checkov" -f "$TEMPLATE" --framework cloudformation --skip-download --compact --quiet

STACK_PY="$TOOLS/stack-venv/bin/python"
echo "==> stack tests: policy allowlist, deploy on moto's CloudFormation (aws-sam-translator $(version "$TOOLS/stack-venv/bin" aws-sam-translator), moto $(version "$TOOLS/stack-venv/bin" moto))"
STACK_TEMPLATE="$(realpath "$TEMPLATE")"
(cd "$ROOT/infra/stack-tests" && TEMPLATE="$STACK_TEMPLATE" "$STACK_PY" -m unittest test_policy test_deploy)

echo "==> template checks passed in ${SECONDS}s"
