#!/usr/bin/env bash
# Runs the MQTT conformance and break-it checks (conformance.py, Eclipse Paho) against the brokers
# in one run: Mosquitto, the bare rmqtt library, pettracker's broker in open mode, and pettracker's
# broker with credentials (the checks within the device contract). Fails if pettracker fails a
# check outside its documented deviations.
# Usage: tests/mqtt-conformance/run.sh [--json FILE]   (needs: mosquitto, python3 with paho-mqtt)
set -euo pipefail
cd "$(dirname "$0")/../.."
json=""
[ "${1:-}" = "--json" ] && json="${2:?--json needs a file}"

work=$(mktemp -d "${TMPDIR:-/tmp}/mqtt-conformance.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q -p gateway --example conformance_brokers
brokers_bin="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/examples/conformance_brokers"

# pettracker's broker and bare rmqtt, in one process that runs until its stdin closes.
mkfifo "$work/stdin"
"$brokers_bin" <"$work/stdin" >"$work/ports.json" 2>"$work/brokers.log" &
pids+=($!)
exec 3>"$work/stdin"
for _ in $(seq 100); do [ -s "$work/ports.json" ] && break; sleep 0.1; done
[ -s "$work/ports.json" ] || { cat "$work/brokers.log"; echo "the brokers did not start"; exit 1; }
pettracker_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pettracker"])' "$work/ports.json")
rmqtt_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rmqtt"])' "$work/ports.json")
auth_port=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pettracker_auth"])' "$work/ports.json")

# Mosquitto on a free port, with the same connection cap the checks expect (CAP in conformance.py).
mosquitto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/mosquitto.conf" <<CONF
listener $mosquitto_port 127.0.0.1
allow_anonymous true
max_connections 30
persistence false
log_dest stderr
CONF
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosquitto" -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pids+=($!)
for _ in $(seq 100); do
  python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$mosquitto_port" 2>/dev/null && break
  sleep 0.1
done
echo "$("$mosquitto" -h | head -1); rmqtt $(grep -A1 '^name = "rmqtt"$' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p'); paho-mqtt $(python3 -c 'import paho.mqtt; print(paho.mqtt.__version__)')"

# pettracker-auth: the same broker with credentials (any tracker id, the example's secret) and a
# gateway that takes a moment to hear of a disconnect; only checks within the device contract.
args=(--broker "mosquitto=127.0.0.1:$mosquitto_port" --broker "rmqtt=127.0.0.1:$rmqtt_port"
      --broker "pettracker=127.0.0.1:$pettracker_port" --require pettracker
      --broker "pettracker-auth=127.0.0.1:$auth_port" --require pettracker-auth
      --credentials "pettracker-auth=conformance-secret")
[ -n "$json" ] && args+=(--json "$json")
python3 tests/mqtt-conformance/conformance.py "${args[@]}"
