# Shared settings for the local environment scripts (sourced, not run).
# Everything binds to 127.0.0.1; state lives under $MAILVAULT_ENV_DIR, built tools under $MAILVAULT_CACHE.

ENV_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$ENV_SCRIPTS_DIR/../.." && pwd)
MAILVAULT_CACHE=${MAILVAULT_CACHE:-$HOME/.cache/mailvault}
MAILVAULT_BIN=$MAILVAULT_CACHE/bin
# Runtime state (certs, data dirs, logs, pids). Outside the repo so a clean clone stays clean.
MAILVAULT_ENV_DIR=${MAILVAULT_ENV_DIR:-${TMPDIR:-/tmp}/mailvault-env}
ENV_FILE=$MAILVAULT_ENV_DIR/env

# Fixed private ports, chosen away from common defaults so a developer's own services do not clash.
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
APISERVER_PORT=${APISERVER_PORT:-26443}
CONTROLLER_MANAGER_PORT=${CONTROLLER_MANAGER_PORT:-26257}
VERSITYGW_PORT=${VERSITYGW_PORT:-27070}
MOTO_PORT=${MOTO_PORT:-27080}
IMAPS_PORT=${IMAPS_PORT:-27993}
IMAP_PORT=${IMAP_PORT:-27143}

log() { printf '[env] %s\n' "$*" >&2; }
die() { printf '[env] ERROR: %s\n' "$*" >&2; exit 1; }

# The version of the module that provides a wrapper's `tool`: the longest required module path that
# is a prefix of the tool's package path (go.mod's require is the single source of the pin).
tool_version() {
  awk '$1=="tool" {pkg=$2}
       $1=="require" && $2!="(" {req[$2]=$3}
       /^require \(/ {inreq=1; next}
       inreq && /^\)/ {inreq=0}
       inreq {req[$1]=$2}
       END {best=""; for (m in req) if (index(pkg"/", m"/")==1 && length(m)>length(best)) best=m; print req[best]}' "$1"
}

# Path of a built tool: <cache>/bin/<tool>-<version>-<hash of its go.mod and go.sum>, so a change of
# pin rebuilds and an unchanged pin reuses the binary.
tool_path() {
  local tool=$1 dir=$ENV_SCRIPTS_DIR/tools/$1 version hash
  version=$(tool_version "$dir/go.mod")
  hash=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-10)
  printf '%s/%s-%s-%s' "$MAILVAULT_BIN" "$tool" "$version" "$hash"
}
