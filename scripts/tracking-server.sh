#!/usr/bin/env bash
# A shared MLflow tracking server on this machine: `make server` / `make server-stop`.
#
#   scripts/tracking-server.sh start    install PostgreSQL if missing (Debian's package), start
#                                       it and `mlflow server` on 127.0.0.1, print the URI
#   scripts/tracking-server.sh stop     stop both
#   scripts/tracking-server.sh status   say what runs
#
# PostgreSQL holds runs, metrics and the model registry; the server stores and serves the
# artifacts itself (--serve-artifacts), so clients need no access to its disk. Both listen on
# 127.0.0.1 only, unless told otherwise. Settings (environment):
#   MLFLOW_SERVER_HOST       the one address both listen on (127.0.0.1; a team's own host's
#                            address to share it: put authentication on, MLFLOW_AUTH=1)
#   MLFLOW_SERVER_PORT (5050), POSTGRES_PORT (5433), SERVER_DIR (.server: state, logs, artifacts)
#   MLFLOW_DB_PASSWORD       the database role's password (default: generated once, kept in
#                            $SERVER_DIR/db-password, mode 600)
#   MLFLOW_AUTH=1            basic authentication (MLflow's basic-auth app); the admin is
#                            MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, which are also
#                            what clients send
set -euo pipefail

cd "$(dirname "$0")/.."
PROJECT=$(pwd)
HOST=${MLFLOW_SERVER_HOST:-127.0.0.1}
MLFLOW_PORT=${MLFLOW_SERVER_PORT:-5050}
PG_PORT=${POSTGRES_PORT:-5433}
STATE=$(mkdir -p "${SERVER_DIR:-.server}" && cd "${SERVER_DIR:-.server}" && pwd)
# passwords, the auth config and the logs live here: never committed, wherever it is
[[ -f $STATE/.gitignore ]] || echo '*' >"$STATE/.gitignore"
MLFLOW=${MLFLOW:-$PROJECT/.venv/bin/mlflow}
PYTHON=$(dirname "$MLFLOW")/python

say() { echo "tracking-server: $*"; }

postgres_bin() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -z $found ]]; then
        say "PostgreSQL is not installed: installing Debian's package"
        local sudo=""
        [[ $(id -u) -eq 0 ]] || sudo=sudo
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    echo "$found"
}

# PostgreSQL refuses to run as root: as root, its files belong to the `postgres` account
# (created by the package) and live where that account can reach them.
if [[ $(id -u) -eq 0 ]]; then
    PG_DATA=/var/lib/postgresql/mlflow-$(echo -n "$STATE" | sha1sum | cut -c1-12)
    as_pg() { runuser -u postgres -- "$@"; }
else
    PG_DATA=$STATE/postgres
    as_pg() { "$@"; }
fi

db_password() {
    if [[ -n ${MLFLOW_DB_PASSWORD:-} ]]; then
        echo "$MLFLOW_DB_PASSWORD"
    else
        if [[ ! -s $STATE/db-password ]]; then
            (umask 077 && "$PYTHON" -c "import secrets; print(secrets.token_urlsafe(24))" \
                >"$STATE/db-password")
        fi
        cat "$STATE/db-password"
    fi
}

# libpq's password file (mode 600): the server's database connection finds its password
# there, so it is in no process's arguments or environment and in no URL (where '@', ':' or
# '/' in it would need escaping); in the file, '\' and ':' are escaped as libpq reads them
write_pgpass() {
    local escaped=${1//\\/\\\\}
    escaped=${escaped//:/\\:}
    (umask 077 && printf '%s:%s:mlflow:mlflow:%s\n' "$HOST" "$PG_PORT" "$escaped" \
        >"$STATE/pgpass")
}

start_postgres() {
    local bin
    bin=$(postgres_bin)
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        say "creating a database cluster in $PG_DATA"
        mkdir -p "$PG_DATA"
        [[ $(id -u) -ne 0 ]] || chown postgres:postgres "$PG_DATA"
        chmod 700 "$PG_DATA"
        # local socket: trusted, but in a folder only its owner can enter; TCP: passwords
        as_pg "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 >/dev/null
    fi
    if ! as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w start \
            -o "-c listen_addresses=$HOST -p $PG_PORT -c unix_socket_directories=$PG_DATA" \
            >/dev/null
    fi
    local password
    password=$(db_password)
    # on standard input, never in psql's arguments (`ps` shows those to every user), and as
    # an SQL string literal with each ' doubled, so any password is taken as it is
    as_pg "$bin/psql" -q -h "$PG_DATA" -p "$PG_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow') THEN
    CREATE ROLE mlflow LOGIN;
  END IF;
END \$\$;
ALTER ROLE mlflow PASSWORD '${password//\'/\'\'}';
SQL
    write_pgpass "$password"
    if [[ -z $(as_pg "$bin/psql" -tA -h "$PG_DATA" -p "$PG_PORT" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'") ]]; then
        as_pg "$bin/createdb" -h "$PG_DATA" -p "$PG_PORT" -U postgres -O mlflow mlflow
    fi
    say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on $HOST:$PG_PORT (data $PG_DATA)"
}

start_mlflow() {
    if [[ -f $STATE/mlflow.pid ]] && kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null; then
        say "mlflow server already runs (pid $(cat "$STATE/mlflow.pid"))"
        return
    fi
    local args=()
    if [[ ${MLFLOW_AUTH:-0} == 1 ]]; then
        : "${MLFLOW_TRACKING_USERNAME:?MLFLOW_AUTH=1 needs MLFLOW_TRACKING_USERNAME}"
        : "${MLFLOW_TRACKING_PASSWORD:?MLFLOW_AUTH=1 needs MLFLOW_TRACKING_PASSWORD}"
        (umask 077 && cat >"$STATE/auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = sqlite:///$STATE/basic_auth.db
admin_username = $MLFLOW_TRACKING_USERNAME
admin_password = $MLFLOW_TRACKING_PASSWORD
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
        )
        export MLFLOW_AUTH_CONFIG_PATH=$STATE/auth.ini
        # the auth app's CSRF protection signs with it; kept so restarts keep sessions valid
        if [[ -z ${MLFLOW_FLASK_SERVER_SECRET_KEY:-} ]]; then
            [[ -s $STATE/flask-secret ]] || (umask 077 && "$PYTHON" -c \
                "import secrets; print(secrets.token_urlsafe(32))" >"$STATE/flask-secret")
            MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$STATE/flask-secret")
            export MLFLOW_FLASK_SERVER_SECRET_KEY
        fi
        args+=(--app-name basic-auth)
    fi
    mkdir -p "$STATE/artifacts"
    # its own session, so `stop` ends the server and every worker it started
    PGPASSFILE=$STATE/pgpass setsid "$MLFLOW" server \
        --backend-store-uri "postgresql+psycopg://mlflow@$HOST:$PG_PORT/mlflow" \
        --serve-artifacts --artifacts-destination "$STATE/artifacts" \
        --host "$HOST" --port "$MLFLOW_PORT" --workers 2 "${args[@]}" \
        >"$STATE/mlflow.log" 2>&1 </dev/null &
    echo $! >"$STATE/mlflow.pid"
    for _ in $(seq 1 120); do
        if "$PYTHON" -c "import urllib.request, sys; urllib.request.urlopen('http://$HOST:$MLFLOW_PORT/health', timeout=2)" 2>/dev/null; then
            say "mlflow server on http://$HOST:$MLFLOW_PORT (pid $(cat "$STATE/mlflow.pid"), log $STATE/mlflow.log)"
            say "run the pipeline against it with:"
            echo "export MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT"
            return
        fi
        if ! kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null; then
            say "mlflow server exited; its log:"
            tail -n 30 "$STATE/mlflow.log" >&2
            exit 1
        fi
        sleep 1
    done
    say "mlflow server did not answer on port $MLFLOW_PORT within 120 s; log: $STATE/mlflow.log"
    exit 1
}

stop_all() {
    if [[ -f $STATE/mlflow.pid ]]; then
        local pid
        pid=$(cat "$STATE/mlflow.pid")
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 -- "-$pid" 2>/dev/null || true
        rm -f "$STATE/mlflow.pid"
        say "mlflow server stopped"
    fi
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [[ -n $bin && -f $PG_DATA/PG_VERSION ]] && as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
        say "PostgreSQL stopped"
    fi
}

case ${1:-start} in
    start) start_postgres; start_mlflow ;;
    stop) stop_all ;;
    status)
        if [[ -f $STATE/mlflow.pid ]] && kill -0 "$(cat "$STATE/mlflow.pid")" 2>/dev/null; then
            say "mlflow server runs on http://$HOST:$MLFLOW_PORT (pid $(cat "$STATE/mlflow.pid"))"
        else
            say "mlflow server is not running"
        fi ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
