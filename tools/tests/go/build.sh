#!/usr/bin/env bash
# Build one of the Go programs under tests/go offline and print the binary's path.
#
#   bash tools/tests/go/build.sh [OUTPUT_PATH [PROGRAM]]
#
# PROGRAM is a directory next to this script: argoretry (the default), pooled or cancels.
# OUTPUT_PATH defaults (also when empty) to $CARGO_TARGET_DIR/PROGRAM, else
# ./target/PROGRAM.
# Uses Debian's Go and lib/pq in GOPATH mode (no module proxy, no network):
#   apt-get install -y golang-go golang-github-lib-pq-dev
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
program="${2:-argoretry}"
out="${1:-${CARGO_TARGET_DIR:-$PWD/target}/$program}"
debian_gopath=/usr/share/gocode

die() {
  echo "build.sh: $*" >&2
  exit 1
}

case "$program" in
  */* | .*) die "PROGRAM must be a directory name next to build.sh, got: $program" ;;
esac
[ -f "$here/$program/main.go" ] || die "no Go program at $here/$program"

command -v go >/dev/null 2>&1 ||
  die "go not found; install it with: apt-get install -y golang-go golang-github-lib-pq-dev"
[ -f "$debian_gopath/src/github.com/lib/pq/conn.go" ] ||
  die "lib/pq not found under $debian_gopath/src/github.com/lib/pq; install it with: apt-get install -y golang-github-lib-pq-dev"

mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"

# GOPATH mode: imports resolve from Debian's /usr/share/gocode only, and
# GOPROXY/GOFLAGS from the caller's environment cannot reach the network.
export GO111MODULE=off GOPATH="$debian_gopath" GOPROXY=off GOFLAGS="" CGO_ENABLED=0
export GOCACHE="${GOCACHE:-${TMPDIR:-/tmp}/pglb-go-build-cache}"

(cd "$here/$program" && go build -o "$out" .) || die "go build failed"
echo "$out"
