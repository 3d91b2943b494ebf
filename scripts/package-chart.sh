#!/usr/bin/env bash
# Packages charts/pushroll as a .tgz with Helm's own engine (PyPI
# helm-python-sdk, no `helm` binary), the chart's version and appVersion
# both the crate's (Cargo.toml).
#
#   scripts/package-chart.sh [DESTINATION]   default: target/charts
#   scripts/package-chart.sh --install       only install (CI does it while
#                                            cargo builds)
#   scripts/package-chart.sh --python        print the virtualenv's python
#                                            (fails when not installed)
#
# helm-python-sdk is pip-installed (pinned) once into a virtualenv under the
# cache directory, outside the work tree:
#   ${PUSHROLL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pushroll}/helm-python-sdk-VERSION
# The tests (tests/it/helm.rs) run scripts/helm.py with that python
# (PUSHROLL_HELM_PYTHON, or this script's --python). Env: PYTHON (python3,
# 3.11 or newer: helm.py reads Cargo.toml with tomllib).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.2.2
CACHE=${PUSHROLL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pushroll}
VENV=$CACHE/helm-python-sdk-$VERSION

case ${1:-} in
  --python)
    [[ -f $VENV/.installed ]] || { echo "helm-python-sdk is not installed ($0 --install)" >&2; exit 1; }
    echo "$VENV/bin/python"
    exit 0
    ;;
esac

if [[ ! -f $VENV/.installed ]]; then
  echo "installing helm-python-sdk $VERSION into $VENV" >&2
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "helm-python-sdk==$VERSION"
  # The shared library loads: a broken wheel fails here, not in the tests.
  "$VENV/bin/python" -c 'import helm_python as h; h.helm_sdk_version()' >/dev/null
  touch "$VENV/.installed"
fi
[[ ${1:-} == --install ]] && exit 0

"$VENV/bin/python" scripts/helm.py package charts/pushroll --destination "${1:-target/charts}"
