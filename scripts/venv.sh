# Sourced by scripts/dev, scripts/test and scripts/audit: make .venv (or $VENV) and give it what
# the caller needs with `need NAME PIP-ARGS...`, which installs again only when the arguments or
# a requirements file changed since NAME was last installed.
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the virtual environment $VENV ..."
  python3 -m venv "$VENV"
fi
export PATH="$PWD/$VENV/bin:$PATH"

need() {
  local name="$1" stamp wanted
  shift
  stamp="$VENV/.installed-$name"
  wanted="$( (echo "$@"; cat requirements.txt requirements-dev.txt) | sha256sum)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "Installing into $VENV: $* (only when they change) ..."
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@"
    echo "$wanted" > "$stamp"
  fi
}
