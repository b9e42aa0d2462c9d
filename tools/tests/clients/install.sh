#!/usr/bin/env bash
# Install what the pooled application clients need, on Debian 12. Idempotent
# and quiet: each step is skipped when its result is already there.
#
#   bash tools/tests/clients/install.sh
#
#   pooled_psycopg.py  psycopg 3 + psycopg_pool (pip; Debian's python3-psycopg
#                      and python3-psycopg-pool if pip cannot install)
#   pooled_pg.js       nodejs + npm (Debian's, if node/npm are missing), then
#                      `npm ci` here (pg pinned in package.json/package-lock.json)
#   ../go/pooled       golang-go + golang-github-lib-pq-dev (built by ../go/build.sh)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
psycopg_pins=('psycopg[binary]==3.3.9' 'psycopg-pool==3.3.3')

apt_install() {
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  echo "install.sh: apt-get install $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -f /usr/share/gocode/src/github.com/lib/pq/conn.go ] || need+=(golang-github-lib-pq-dev)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if ((${#need[@]})); then
  apt_install "${need[@]}"
fi

# psycopg: pip first (the pinned versions); a Python that refuses pip installs
# (PEP 668, Debian's own python3) gets Debian's packages instead.
if ! python3 -c 'import psycopg, psycopg_pool' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check "${psycopg_pins[@]}" 2>/dev/null ||
    apt_install python3-psycopg python3-psycopg-pool
  python3 -c 'import psycopg, psycopg_pool'
fi

# node-postgres: reinstall from the lock file only when the tree is not right.
if ! (cd "$here" && npm ls --silent >/dev/null 2>&1); then
  (cd "$here" && npm ci --silent --no-audit --no-fund >/dev/null)
fi
