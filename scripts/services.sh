# Sourced by scripts/test: make sure PostgreSQL and Redis answer for the tests that use them
# (TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres with trust auth;
# TEST_REDIS_URL, default redis://127.0.0.1:6379/0). Where nothing answers on 127.0.0.1:5432 or
# :6379, install Debian's postgresql or redis-server if missing (needs root) and start a throwaway
# server in a temporary directory, stopped when the tests end. The tests make their own databases
# and Redis key prefixes, and remove them.
answers() {
  python3 - "$1" <<'PY'
import socket, sys
with socket.socket() as sock:
    sock.settimeout(1)
    sys.exit(sock.connect_ex(("127.0.0.1", int(sys.argv[1]))))
PY
}

install_debian() {
  echo "Installing Debian's $1 for the tests ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

start_throwaway_postgres() {
  ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || install_debian postgresql
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
  STOP+=("${PG_AS[*]} $PG_BIN/pg_ctl -D $PG_DIR/data -m fast stop >/dev/null; rm -rf $PG_DIR")
}

start_throwaway_redis() {
  command -v redis-server >/dev/null 2>&1 || install_debian redis-server
  REDIS_DIR="$(mktemp -d /tmp/gateway-redis.XXXXXX)"
  echo "Starting a throwaway Redis on 127.0.0.1:6379 in $REDIS_DIR ..."
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir "$REDIS_DIR" \
    --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log"
  for _ in $(seq 50); do answers 6379 && break; sleep 0.1; done
  STOP+=("kill \$(cat $REDIS_DIR/redis.pid); rm -rf $REDIS_DIR")
}

STOP=()
stop_throwaway_servers() {
  for command in "${STOP[@]}"; do eval "$command"; done
}
trap stop_throwaway_servers EXIT
[ -n "${TEST_POSTGRES_URL:-}" ] || answers 5432 || start_throwaway_postgres
[ -n "${TEST_REDIS_URL:-}" ] || answers 6379 || start_throwaway_redis
