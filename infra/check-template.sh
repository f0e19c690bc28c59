#!/usr/bin/env bash
# Static checks for template.yaml: cfn-lint, `sam validate --lint` and checkov.
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

echo "==> template checks passed in ${SECONDS}s"
