#!/usr/bin/env bash
# Where the agent's time goes: sonde (release) tracing nginx under wrk for 8 s, exporting OTLP/gRPC
# to the bench's counting receiver, with `perf record` on the agent. Prints the agent's CPU time
# per request (user + sys from /proc ÷ requests), what the receiver got, and the top symbols.
#
#   bash bench/profile.sh                 # saturation
#   RATE=5000 bash bench/profile.sh       # a fixed rate, with hey as the benchmark runs it
#   OUTPUT=none bash bench/profile.sh     # no export: the capture and span cost alone
#   SONDE=/path/to/sonde TOP=40 bash bench/profile.sh
#
# Needs root, nginx, wrk and perf (linux-perf), the peers venv (cargo xtask setup) and a release
# build (cargo build --release -p sonde). Run it on a quiet machine: nothing else tracing.
set -eu
cd "$(dirname "$0")/.."
D=$(mktemp -d /tmp/sonde-profile.XXXXXX)
mkdir -p "$D/b"
CG=$(findmnt -t cgroup2 -no TARGET | head -1)/sonde-profile-$$
mkdir -p "$CG"
PY=target/peers/venv/bin/python
PORT=${PORT:-18081}
SINK_PORT=${SINK_PORT:-14318}
cat > "$D/nginx.conf" <<C
daemon off; worker_processes 1; pid $D/nginx.pid; error_log $D/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $D/b; proxy_temp_path $D/b;
  fastcgi_temp_path $D/b; uwsgi_temp_path $D/b; scgi_temp_path $D/b;
  server { listen 127.0.0.1:$PORT backlog=4096; location / { return 200 "ok\n"; } } }
C
sh -c "echo \$\$ > $CG/cgroup.procs; exec nginx -c $D/nginx.conf" &
NG=$!
$PY bench/peers/count_sink.py "$SINK_PORT" "$D/counts.json" > "$D/sink.log" 2>&1 &
SK=$!
cleanup() {
  kill "$NG" "$SK" 2>/dev/null || true
  wait 2>/dev/null || true
  rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT
sleep 2
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$SINK_PORT OTEL_BSP_SCHEDULE_DELAY=200 SONDE_LOG=warn \
  "${SONDE:-target/release/sonde}" run --cgroup "$CG" --output "${OUTPUT:-otlp}" \
  --summary-json "$D/summary.json" --metrics-address "" 2> "$D/sonde.log" &
SP=$!
for _ in $(seq 1 300); do grep -q tracing "$D/sonde.log" && break; sleep 0.1; done
C0=$(awk '{print $14+$15}' "/proc/$SP/stat")
perf record -F 999 ${PERF_CG:--g} -p "$SP" -o "$D/perf.data" -- sleep 9 > /dev/null 2>&1 &
PF=$!
if [ -n "${RATE:-}" ]; then
  W=$(( RATE / 100 < 1 ? 1 : (RATE / 100 > 200 ? 200 : RATE / 100) ))
  hey -z 8s -c "$W" -q $(( RATE / W )) "http://127.0.0.1:$PORT/" > "$D/hey.txt"
  REQ=$(awk '/\[200\]/ {print $2}' "$D/hey.txt")
else
  wrk -t1 -c32 -d8s "http://127.0.0.1:$PORT/" > "$D/wrk.txt"
  REQ=$(grep -oP '\d+(?= requests in)' "$D/wrk.txt")
fi
wait "$PF"
C1=$(awk '{print $14+$15}' "/proc/$SP/stat")
HWM=$(awk '/VmHWM/ {print $2}' "/proc/$SP/status")
kill -INT "$SP"
wait "$SP" || true
TICK=$(getconf CLK_TCK)
python3 - "$D/summary.json" "$REQ" "$((C1 - C0))" "$TICK" "$HWM" <<'P'
import json, sys
summary, req, ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"requests {req}, agent CPU {ticks / hz:.2f} s = {ticks / hz * 1e6 / req:.2f} us per request, "
      f"agent peak RSS {int(sys.argv[5]) / 1024:.1f} MiB")
e = json.load(open(summary)).get("export")
if e:
    print(f"spans created {e['created']}, exported {e['exported']}, dropped {e['dropped']}")
P
perf report -i "$D/perf.data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E "^ +[0-9]" | head -"${TOP:-25}" | cut -c1-110
echo "perf data and logs: $D"
