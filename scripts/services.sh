# Sourced by scripts/test: make sure a PostgreSQL server answers for the tests that run on it
# (TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres, trust auth). Where none
# answers on 127.0.0.1:5432, install Debian's postgresql if it is missing (needs root) and start a
# throwaway cluster in a temporary directory, stopped when the tests end. The tests make their own
# databases in it and drop them.
pg_answers() {
  python3 - <<'PY'
import socket, sys
with socket.socket() as sock:
    sock.settimeout(1)
    sys.exit(sock.connect_ex(("127.0.0.1", 5432)))
PY
}

start_throwaway_postgres() {
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    echo "Installing Debian's postgresql for the tests ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  PG_DIR="$(mktemp -d /tmp/gateway-postgres.XXXXXX)"
  PG_AS=()
  if [ "$(id -u)" = 0 ]; then  # PostgreSQL refuses to run as root
    chown postgres "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  echo "Starting a throwaway PostgreSQL on 127.0.0.1:5432 in $PG_DIR ..."
  "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >/dev/null
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-h 127.0.0.1 -p 5432 -k $PG_DIR -c fsync=off" start >/dev/null
  trap stop_throwaway_postgres EXIT
}

stop_throwaway_postgres() {
  "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop >/dev/null
  rm -rf "$PG_DIR"
}

if [ -z "${TEST_POSTGRES_URL:-}" ] && ! pg_answers; then
  start_throwaway_postgres
fi
