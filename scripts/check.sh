#!/usr/bin/env bash
# Install everything the tests need, then run lint, type checks and the whole test
# suite on the oldest and the newest supported Python (3.11 and 3.13), and on 3.12 (the
# first with eager task factories) the asyncio tests and the semantics suites over an
# eager-factory loop.
# Usage: ./scripts/check.sh            (from the repository root; any directory works)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {  # find_python 3.13 -> path of a python3.13, or nothing
  local v="$1" c
  for c in "python$v" "$HOME/.pyenv/versions/$v"*/bin/python "/root/.pyenv/versions/$v"*/bin/python \
           "/usr/local/bin/python$v" "/usr/bin/python$v"; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$v'.split('.')))" 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}

# The lease tests start their own redis-server on loopback (never the service on 6379).
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  echo "== installing redis-server (for the lease tests) =="
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null \
    || { $sudo_ apt-get update -q >/dev/null && $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; } \
    || { echo "!! could not install redis-server (apt-get install -y redis-server)" >&2; exit 1; }
fi

versions=(${CORRAL_PYTHONS:-3.11 3.13 3.12})
# Tests run in 3 processes (pytest-xdist): most of the suite's time is spent waiting on
# real processes, TTLs and timers, so 3 processes on 2 cores halve it. CORRAL_JOBS=0 runs
# one process.
jobs=(-n "${CORRAL_JOBS:-3}")
status=0
first=1
for v in "${versions[@]}"; do
  py=$(find_python "$v") || { echo "!! Python $v not found: install it (e.g. pyenv install $v) or set CORRAL_PYTHONS" >&2; exit 1; }
  venv=".venv-$v"
  echo "== Python $v ($py) =="
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install -q -e '.[test]'
  if [ "$first" = 1 ]; then
    echo "-- ruff"; "$venv/bin/ruff" check src tests benchmarks || status=1
    echo "-- mypy (strict)"; "$venv/bin/mypy" || status=1
    first=0
  fi
  echo "-- pytest on $v"
  if [ "$v" = "${versions[0]}" ]; then
    "$venv/bin/python" -m pytest -W error -q "${jobs[@]}" --cov --cov-report=term:skip-covered \
      --cov-fail-under="${CORRAL_COVERAGE_MIN:-85}" "$@" || status=1
  elif [ "$v" = 3.12 ] && [ $# = 0 ]; then
    # The asyncio tests, and the semantics suites over the asyncio runner on a loop
    # whose task factory is asyncio.eager_task_factory (new in 3.12).
    CORRAL_RUNNERS=asyncio-eager "$venv/bin/python" -m pytest -W error -q "${jobs[@]}" tests/test_async.py \
      tests/test_group.py tests/test_map.py tests/test_restart.py tests/test_supervisor.py \
      tests/test_traps.py tests/test_tree.py tests/test_token.py tests/test_properties.py || status=1
  else
    "$venv/bin/python" -m pytest -W error -q "${jobs[@]}" "$@" || status=1
  fi
done
exit $status
