# Shared by the server benchmark scripts (`fill`, `restart`, `server-ab`); sourced, not run.

# Stops any running `ultracore serve` and waits until it has exited. Servers are found by the
# binary's file name, so copies of the binary must be named `ultracore*` too.
stop_servers() {
  pkill -f "ultracore[-a-z]* serve" || true
  while pgrep -f "ultracore[-a-z]* serve" >/dev/null; do sleep 0.2; done
}

# start_server BINARY DATA_DIR LOG: starts `BINARY serve` on DATA_DIR with the per-principal rate
# limit off and the settings in EXTRA_ENV, its output in LOG; sets PID.
start_server() {
  # shellcheck disable=SC2086 # EXTRA_ENV is a list of assignments
  env ULTRACORE_DATA_DIR="$2" ULTRACORE_RATE_LIMIT_PER_SECOND=0 ${EXTRA_ENV:-} "$1" serve > "$3" 2>&1 &
  PID=$!
}

# wait_ready SECONDS_BETWEEN [TRIES]: polls the ledger listener's /health/ready until it answers,
# at most TRIES times (without TRIES: until it answers).
wait_ready() {
  local n=0
  until curl -sf http://127.0.0.1:8000/health/ready >/dev/null; do
    n=$((n + 1))
    if [ -n "${2:-}" ] && [ "$n" -ge "$2" ]; then return 0; fi
    sleep "$1"
  done
}

# export_token BINARY DATA_DIR TTL_SECONDS: mints an admin token with the data directory's secret
# into ULTRACORE_TOKEN, which ultracore-loadgen reads.
export_token() {
  ULTRACORE_TOKEN=$(ULTRACORE_DATA_DIR=$2 "$1" token --sub loadgen --role admin --ttl "$3")
  export ULTRACORE_TOKEN
}
