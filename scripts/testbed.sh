#!/usr/bin/env bash
# Berth's test environment: three real Docker engines (h1 in the host network namespace, h2 in
# its own namespace "h2", reachable over plain TCP, and h3 beside h2 in that namespace, reachable
# only over TLS with a client certificate), an open and an htpasswd-protected registry, a
# busybox test image on every engine, and a PostgreSQL database. Must run as root.
# Recipe and rationale: TESTBED.md.
#
#   scripts/testbed.sh up | down | status | env | stop-engine h1|h2|h3 | start-engine h1|h2|h3
#   eval "$(scripts/testbed.sh env)"
set -Eeuo pipefail
trap 'echo "testbed: failed: $BASH_COMMAND (line $LINENO)" >&2' ERR

TB=${BERTH_TB:-/tmp/berth-tb}
SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
HOST_IP=10.203.0.1 NS_IP=10.203.0.2
REG_OPEN=$HOST_IP:5000 REG_AUTH=$HOST_IP:5001
REG_USER=berth REG_PASS=berth-secret-pw
IMAGE=berth-test/busybox:latest
PG_DB=berth_test PG_SOCK=/var/run/postgresql
# Tests connect over TCP with a password: peer auth on the socket would need the postgres OS user.
PG_USER=berth PG_PASS=berth-test-pw
# h3's CA, server and client certificates (scripts/testbed_tls.py); client/ is a DOCKER_CERT_PATH.
TLS=$TB/tls
READY_TIMEOUT=60 STOP_TIMEOUT=15
# Classic builder: deterministic on 20.10 and needs nothing beyond the engine itself.
export DOCKER_BUILDKIT=0

die() { echo "testbed: $*" >&2; exit 1; }
die_log() { # die_log MESSAGE LOGFILE
  echo "testbed: $1 -- see $2" >&2
  [[ -f $2 ]] && tail -n 15 "$2" | sed 's/^/    /' >&2
  exit 1
}

engine_url() {
  case $1 in
    h1) echo "unix://$TB/h1/docker.sock" ;;
    h2) echo "tcp://$NS_IP:2375" ;;
    h3) echo "tcp://$NS_IP:2376" ;;
  esac
}
# Sets the array named ARRAY to what the docker CLI needs in its environment for engine H:
# h3 answers only a client with a certificate from the testbed CA.
cli_env() { # H ARRAY
  local -n vars=$2
  vars=()
  [[ $1 != h3 ]] || vars=(DOCKER_TLS_VERIFY=1 "DOCKER_CERT_PATH=$TLS/client")
}
dk() { local h=$1 cli; shift; cli_env "$h" cli; env "${cli[@]}" docker -H "$(engine_url "$h")" "$@"; }

# A zombie counts as dead: our daemons are reparented to pid 1 (setsid, the script exits),
# and this machine's pid 1 reaps them only after a while.
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != [ZX] ]]
}

# True if PIDFILE names a running process called COMM. Checking the name keeps a pid
# recycled since a killed earlier run from being mistaken for ours.
pid_alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && running "$pid"
}

# SIGTERM, wait, then SIGKILL the process in PIDFILE (if it is COMM).
stop_pidfile() { # PIDFILE COMM
  local pid deadline=$((SECONDS + STOP_TIMEOUT))
  if pid_alive "$1" "$2"; then
    pid=$(<"$1")
    kill -TERM "$pid" 2>/dev/null || true
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if running "$pid"; then
      echo "testbed: $2 ($pid) still running ${STOP_TIMEOUT}s after SIGTERM, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      while running "$pid"; do sleep 0.1; done
    fi
  fi
  rm -f "$1"
}

# Poll CHECK until it succeeds; give up early if the process we launched (PID) has died.
wait_ready() { # WHAT LOGFILE PID CHECK...
  local what=$1 logf=$2 pid=$3 deadline=$((SECONDS + READY_TIMEOUT))
  shift 3
  until "$@" >/dev/null 2>&1; do
    running "$pid" || die_log "$what exited during start-up" "$logf"
    ((SECONDS < deadline)) || die_log "$what not ready after ${READY_TIMEOUT}s" "$logf"
    sleep 0.2
  done
}

ensure_packages() {
  local c missing=()
  for c in dockerd docker docker-registry htpasswd ip iptables nsenter pg_ctlcluster psql; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  # Debian's plain "busybox" is dynamically linked and would not run in a FROM-scratch image.
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
  ((${#missing[@]})) || return 0
  echo "testbed: installing packages (missing: ${missing[*]})" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    docker.io busybox-static docker-registry apache2-utils iproute2 iptables postgresql >/dev/null
}

# ---- network: namespace h2 joined to the host by a veth pair; h1's own bridge ----
netns_ok() { [[ -e /run/netns/h2 ]] && ip -n h2 link show lo >/dev/null 2>&1; }

ensure_netns() {
  if ! netns_ok; then
    # /run/netns/h2 may be a stale file left behind without its bind mount (e.g. after a reboot).
    ip netns del h2 2>/dev/null || rm -f /run/netns/h2
    ip netns add h2
  fi
  # A veth-h2 whose peer is not in the current h2 (namespace recreated) is useless: replace it.
  if ! ip -n h2 link show eth0 >/dev/null 2>&1; then
    ip link del veth-h2 2>/dev/null || true
    ip link add veth-h2 type veth peer name eth0 netns h2
  fi
  ip addr replace "$HOST_IP/24" dev veth-h2
  # Without veth-h2 (partition, or h2 gone) 10.203.0.0/24 would follow the default route, and
  # on these machines something out there answers HTTP (404s) for any address. Fail fast instead.
  ip route replace unreachable 10.203.0.0/24 metric 4242
  ip -n h2 addr replace "$NS_IP/24" dev eth0
  # Setting links up every time also heals a simulated partition (ip link set veth-h2 down).
  ip link set veth-h2 up
  ip -n h2 link set eth0 up
  ip -n h2 link set lo up
  # Replies from h2 to h1's containers (10.212.0.0/24) go back through the host.
  ip -n h2 route replace default via "$HOST_IP"
}

# h1 shares the host namespace with whatever else runs there (maybe a developer's own dockerd on
# docker0), so it gets a bridge of its own instead of docker0; --bip cannot be combined with -b,
# so the bridge carries 10.212.0.1/24 itself.
ensure_h1_bridge() {
  ip link show berth-h1 >/dev/null 2>&1 || ip link add berth-h1 type bridge
  ip addr replace 10.212.0.1/24 dev berth-h1
  ip link set berth-h1 up
}

# h3 shares h2's namespace, where h2 owns docker0 and the iptables chains: it gets a bridge of
# its own and leaves iptables alone (its containers reach nothing outside; no test needs that).
ensure_h3_bridge() {
  ip -n h2 link show berth-h3 >/dev/null 2>&1 || ip -n h2 link add berth-h3 type bridge
  ip -n h2 addr replace 10.216.0.1/24 dev berth-h3
  ip -n h2 link set berth-h3 up
}

# h1 and h3 run with --iptables=false, so nothing accepts their containers' traffic in FORWARD:
# where an ordinary Docker runs beside the testbed (its FORWARD policy is DROP, and with
# br_netfilter even traffic between two containers on one bridge passes FORWARD), that traffic
# is dropped. The testbed accepts it itself, for its own address ranges only, from a chain of
# its own: filled afresh on every call (idempotent), removed by `down`.
FORWARD_CHAIN=BERTH-TESTBED
H1_NETS=(10.212.0.0/24 10.214.0.0/16) # berth-h1 (--bip) and h1's --default-address-pool
H3_NETS=(10.216.0.0/24 10.217.0.0/16) # the same for h3, inside namespace h2
ensure_forward_rules() { # IPTABLES-COMMAND... -- CIDR...
  local ipt=() net
  while [[ $1 != -- ]]; do ipt+=("$1"); shift; done
  shift
  "${ipt[@]}" -w -N "$FORWARD_CHAIN" 2>/dev/null || "${ipt[@]}" -w -F "$FORWARD_CHAIN"
  for net in "$@"; do
    "${ipt[@]}" -w -A "$FORWARD_CHAIN" -s "$net" -j ACCEPT
    "${ipt[@]}" -w -A "$FORWARD_CHAIN" -d "$net" -j ACCEPT
  done
  "${ipt[@]}" -w -C FORWARD -j "$FORWARD_CHAIN" 2>/dev/null ||
    "${ipt[@]}" -w -I FORWARD 1 -j "$FORWARD_CHAIN"
}
remove_forward_rules() { # IPTABLES-COMMAND...
  while "$@" -w -D FORWARD -j "$FORWARD_CHAIN" 2>/dev/null; do :; done
  "$@" -w -F "$FORWARD_CHAIN" 2>/dev/null || true
  "$@" -w -X "$FORWARD_CHAIN" 2>/dev/null || true
}

ensure_tls() {
  local python=${SCRIPT%/scripts/*}/.venv/bin/python
  [[ -x $python ]] || die "no $python: run scripts/bootstrap.sh first (h3's certificates need it)"
  "$python" "${SCRIPT%/*}/testbed_tls.py" "$TLS" "$NS_IP"
}

# ---- engines ----
engine_ready() {
  local cli
  cli_env "$1" cli
  timeout 5 env "${cli[@]}" docker -H "$(engine_url "$1")" version >/dev/null 2>&1
}

# Start engine H in the background unless it is already running. Prints nothing.
launch_engine() {
  local h=$1 dir=$TB/$1 prefix=()
  local args=(--data-root "$dir/root" --exec-root "$dir/exec" --pidfile "$dir/pid"
    -H "unix://$dir/docker.sock"
    # Ignore /etc/docker/daemon.json: a "hosts" entry there would clash with our -H flags.
    --config-file "$TB/daemon.json"
    # Separate namespaces in case both engines end up on a system containerd.
    --containerd-namespace "berth-$h" --containerd-plugins-namespace "berth-$h-plugins"
    --insecure-registry "$REG_OPEN" --insecure-registry "$REG_AUTH")
  case $h in
    h1)
      ensure_h1_bridge
      ensure_forward_rules iptables -- "${H1_NETS[@]}"
      # dockerd flushes the DOCKER iptables chains at start; in the shared host namespace that
      # would break another engine's port forwards. Published ports still work via docker-proxy.
      args+=(--bridge berth-h1 --iptables=false
        --default-address-pool "base=10.214.0.0/16,size=24") ;;
    h2)
      ensure_netns
      # --tls=false explicitly: otherwise 20.10 sleeps 15 s to warn about the plain TCP listener.
      args+=(-H "$(engine_url h2)" --tls=false --bip 10.213.0.1/24
        --default-address-pool "base=10.215.0.0/16,size=24") ;;
    h3)
      ensure_netns
      ensure_h3_bridge
      ensure_forward_rules nsenter --net=/run/netns/h2 iptables -- "${H3_NETS[@]}"
      ensure_tls
      # --tlsverify: the engine checks clients against the CA too; one without a certificate is refused.
      args+=(-H "$(engine_url h3)" --tlsverify --tlscacert "$TLS/ca.pem"
        --tlscert "$TLS/server-cert.pem" --tlskey "$TLS/server-key.pem"
        --bridge berth-h3 --iptables=false --default-address-pool "base=10.217.0.0/16,size=24") ;;
  esac
  # nsenter, not "ip netns exec": the latter remounts /sys and dockerd then finds no cgroups.
  [[ $h == h1 ]] || prefix=(nsenter --net=/run/netns/h2)
  if pid_alive "$dir/pid" dockerd; then
    # An h2/h3 engine left in an older (deleted) namespace is unreachable: restart it.
    [[ $h != h1 && $(readlink "/proc/$(<"$dir/pid")/ns/net") != "net:[$(stat -L -c %i /run/netns/h2)]" ]] ||
      { ENGINE_PID[$h]=$(<"$dir/pid"); return 0; }
    stop_pidfile "$dir/pid" dockerd
  fi
  mkdir -p "$dir"
  echo '{}' >"$TB/daemon.json"
  rm -f "$dir/pid" "$dir/docker.sock" # stale leftovers make dockerd refuse to start
  # dockerd reuses the containerd named in this pidfile if the pid exists - even as a zombie
  # of a killed engine - and then times out connecting to it. Start from a fresh containerd.
  stop_pidfile "$dir/exec/containerd/containerd.pid" containerd
  echo "==== testbed start $(date -Is)" >>"$dir/log"
  setsid "${prefix[@]}" dockerd "${args[@]}" >>"$dir/log" 2>&1 </dev/null 9>&- &
  ENGINE_PID[$h]=$!
}

wait_engine() { wait_ready "engine $1" "$TB/$1/log" "${ENGINE_PID[$1]}" engine_ready "$1"; }

# ---- registries ----
write_registry_config() { # NAME PORT [auth]
  local auth=""
  [[ ${3:-} ]] && auth="auth: {htpasswd: {realm: berth-test, path: $TB/htpasswd}}"
  cat >"$TB/$1.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $TB/$1}, delete: {enabled: true}}
http: {addr: "$HOST_IP:$2", secret: berth-testbed-not-secret}
$auth
EOF
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

start_registry() { # NAME PORT [auth]
  local name=$1 port=$2 pidf=$TB/$1.pid logf=$TB/$1.log pid
  # The registry would generate a random password for a missing htpasswd file.
  [[ -s $TB/htpasswd ]] || htpasswd -Bbn "$REG_USER" "$REG_PASS" >"$TB/htpasswd"
  write_registry_config "$@"
  if pid_alive "$pidf" docker-registry; then
    pid=$(<"$pidf")
  else
    # Checked up front: the readiness probe below cannot tell who is listening.
    ! port_open "$HOST_IP" "$port" ||
      die "$HOST_IP:$port is taken by another process (Debian's docker-registry service listens on :5000)"
    echo "==== testbed start $(date -Is)" >>"$logf"
    # exec keeps the pid: $! is the registry itself (setsid does not fork in a script).
    setsid docker-registry serve "$TB/$name.yml" >>"$logf" 2>&1 </dev/null 9>&- &
    pid=$!
    echo "$pid" >"$pidf"
  fi
  wait_ready "registry $name ($HOST_IP:$port)" "$logf" "$pid" port_open "$HOST_IP" "$port"
}

# ---- test image, cross-engine checks ----
build_image() { # H
  local ctx=$TB/img
  dk "$1" image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  printf '%s\n' 'FROM scratch' 'COPY busybox /bin/busybox' \
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]' 'CMD ["/bin/sh"]' >"$ctx/Dockerfile"
  dk "$1" build -q -t "$IMAGE" "$ctx" >"$TB/build-$1.log" 2>&1 || die_log "image build on $1 failed" "$TB/build-$1.log"
}

verify() {
  local out=$TB/verify.log cfg h ref=$REG_OPEN/$IMAGE
  : >"$out"
  for h in h1 h2 h3; do
    dk "$h" run --rm "$IMAGE" true >>"$out" 2>&1 || die_log "engine $h cannot run containers" "$out"
  done
  { dk h1 tag "$IMAGE" "$ref" && dk h1 push "$ref" && dk h2 pull "$ref"; } >>"$out" 2>&1 ||
    die_log "push from h1 / pull on h2 through $REG_OPEN failed" "$out"
  dk h1 rmi "$ref" >/dev/null && dk h2 rmi "$ref" >/dev/null # keep the engines' image lists clean
  # A throw-away client config, so ~/.docker is never touched.
  cfg=$(mktemp -d)
  if ! echo "$REG_PASS" | DOCKER_CONFIG=$cfg dk h1 login -u "$REG_USER" --password-stdin "$REG_AUTH" >>"$out" 2>&1; then
    rm -rf "$cfg"
    die_log "docker login to $REG_AUTH failed" "$out"
  fi
  if echo wrong | DOCKER_CONFIG=$cfg dk h1 login -u "$REG_USER" --password-stdin "$REG_AUTH" >>"$out" 2>&1; then
    rm -rf "$cfg"
    die "registry $REG_AUTH accepted a wrong password"
  fi
  rm -rf "$cfg"
}

# ---- PostgreSQL ----
pg_version() { # the cluster "main" if there is one, else the first cluster
  pg_lsclusters -h | awk '$2 == "main" {print $1; f=1; exit} NR == 1 {v=$1} END {if (!f && v) print v}'
}

ensure_postgres() {
  local ver exists
  ver=$(pg_version)
  if [[ -z $ver ]]; then
    ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1)
    [[ -n $ver ]] || die "no PostgreSQL server installed under /usr/lib/postgresql"
    pg_createcluster "$ver" main >/dev/null
  fi
  local logf=/var/log/postgresql/postgresql-$ver-main.log
  pg_isready -q -h "$PG_SOCK" ||
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start 9>&- || die_log "PostgreSQL $ver failed to start" "$logf"
  # pg_ctlcluster has already exited, so there is no server pid to watch: pass our own.
  wait_ready "PostgreSQL $ver" "$logf" $$ pg_isready -q -h "$PG_SOCK"
  local psql=(runuser -u postgres -- psql -h "$PG_SOCK" -v ON_ERROR_STOP=1 -qtA)
  exists=$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")
  # CREATEDB: the migration tests and benchmarks make scratch databases of their own.
  [[ $exists == 1 ]] || "${psql[@]}" -c "CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASS'" >/dev/null
  exists=$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")
  [[ $exists == 1 ]] || "${psql[@]}" -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >/dev/null
  "${psql[@]}" -c "ALTER DATABASE $PG_DB OWNER TO $PG_USER" >/dev/null
}

# ---- subcommands ----
declare -A ENGINE_PID

cmd_up() {
  [[ $(id -u) == 0 ]] || die "must run as root"
  ensure_packages
  mkdir -p "$TB"
  ensure_netns
  # Engines boot in parallel with the registries and PostgreSQL; waiting comes last.
  launch_engine h1
  launch_engine h2
  launch_engine h3
  start_registry reg-open 5000
  start_registry reg-auth 5001 auth
  ensure_postgres
  wait_engine h1
  wait_engine h2
  wait_engine h3
  build_image h1
  build_image h2
  build_image h3
  verify
}

cmd_down() {
  stop_pidfile "$TB/reg-open.pid" docker-registry
  stop_pidfile "$TB/reg-auth.pid" docker-registry
  stop_pidfile "$TB/h1/pid" dockerd
  stop_pidfile "$TB/h2/pid" dockerd
  stop_pidfile "$TB/h3/pid" dockerd
  # Deleting the namespace alone may not free the veth if a stray process still lives in it.
  ip link del veth-h2 2>/dev/null || true
  ip netns del h2 2>/dev/null || true
  ip link del berth-h1 2>/dev/null || true
  # h3's rules went with namespace h2; h1's live in the host's tables.
  remove_forward_rules iptables
  ip route del unreachable 10.203.0.0/24 metric 4242 2>/dev/null || true
  # Engines killed with SIGKILL leave their data-root bind mounts behind, which block rm -rf.
  awk -v tb="$TB/" 'index($5, tb) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}

netns_up() { netns_ok && [[ $(cat /sys/class/net/veth-h2/operstate 2>/dev/null) == up ]]; }
registry_up() { pid_alive "$TB/$1.pid" docker-registry && port_open "$HOST_IP" "$2"; }

cmd_status() {
  line() { # NAME DETAIL CHECK...
    local state=down
    "${@:3}" >/dev/null 2>&1 && state=up
    printf '%-15s %-5s %s\n' "$1" "$state" "$2"
  }
  line "netns h2" "veth-h2 $HOST_IP <-> eth0 $NS_IP" netns_up
  line "engine h1" "$(engine_url h1)" engine_ready h1
  line "engine h2" "$(engine_url h2)" engine_ready h2
  line "engine h3" "$(engine_url h3) (TLS, client certificate)" engine_ready h3
  line "registry open" "$REG_OPEN" registry_up reg-open 5000
  line "registry auth" "$REG_AUTH" registry_up reg-auth 5001
  line "postgresql" "$PG_SOCK" pg_isready -q -h "$PG_SOCK"
}

cmd_env() {
  cat <<EOF
export BERTH_TEST_H1_URL='$(engine_url h1)'
export BERTH_TEST_H2_URL='$(engine_url h2)'
export BERTH_TEST_H3_URL='$(engine_url h3)'
export BERTH_TEST_H3_CA='$TLS/ca.pem'
export BERTH_TEST_H3_CLIENT_CERT='$TLS/client/cert.pem'
export BERTH_TEST_H3_CLIENT_KEY='$TLS/client/key.pem'
export BERTH_TEST_H3_OTHER_CA='$TLS/other-ca.pem'
export BERTH_TEST_REGISTRY='$REG_OPEN'
export BERTH_TEST_AUTH_REGISTRY='$REG_AUTH'
export BERTH_TEST_REGISTRY_USER='$REG_USER'
export BERTH_TEST_REGISTRY_PASSWORD='$REG_PASS'
export BERTH_TEST_PG_URL='postgresql+psycopg://$PG_USER:$PG_PASS@127.0.0.1:5432/$PG_DB'
export BERTH_TESTBED_SCRIPT='$SCRIPT'
export BERTH_TEST_IMAGE='$IMAGE'
EOF
}

engine_arg() { [[ ${1:-} == h[123] ]] || die "usage: $(basename "$0") $2 h1|h2|h3"; }

# Test sessions (e.g. several pytest workers) may call up/start/stop at the same time.
# Every daemon is started with 9>&-: one inheriting the lock would hold it forever.
case ${1:-} in
  up | down | stop-engine | start-engine)
    exec 9>"$TB.lock"
    flock -w 180 9 || die "timed out waiting for another testbed.sh ($TB.lock)" ;;
esac

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  stop-engine) engine_arg "${2:-}" stop-engine && stop_pidfile "$TB/$2/pid" dockerd ;;
  start-engine)
    engine_arg "${2:-}" start-engine
    launch_engine "$2" && wait_engine "$2" ;;
  *) die "usage: $(basename "$0") up|down|status|env|stop-engine h1|h2|h3|start-engine h1|h2|h3" ;;
esac
