#!/bin/sh
# The kernel matrix's test (`cargo xtask vm-test`): PID 1 of each VM (VM_MODE=vm), or run by
# xtask on the host (VM_MODE=host, with SONDE, PEER, OUT and CG2 set). It only gathers: what it
# learns goes to stdout between `@@sonde-vm` markers, and xtask/src/vm.rs judges it, so every
# kernel is judged by the same code. Plain POSIX sh: busybox ash in the VM, dash on the host.
set -u
mode=${VM_MODE:-vm}

say() { echo "@@sonde-vm $*"; }
dump() {
    echo "@@sonde-vm-begin $1"
    cat "$2" 2>/dev/null
    echo
    echo "@@sonde-vm-end $1"
}

if [ "$mode" = vm ]; then
    export PATH=/bin
    /bin/busybox --install -s /bin
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
    mount -t tmpfs tmpfs /tmp
    mount -t tracefs tracefs /sys/kernel/tracing
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
    mount -t bpf bpf /sys/fs/bpf
    ip link set lo up
    # Run-time statistics of BPF programs (run_time_ns, run_cnt): the per-request cost.
    echo 1 >/proc/sys/kernel/bpf_stats_enabled
    SONDE=/bin/sonde PEER=/bin/sonde-vm-peer OUT=/tmp/out CG2=/sys/fs/cgroup
fi
MPORT=${MPORT:-19464}
mkdir -p "$OUT"
say kernel "$(uname -r)"
say start "$(date +%s)"

"$SONDE" doctor --json >"$OUT/doctor.json" 2>"$OUT/doctor.err"
say doctor-exit $?
dump doctor.json "$OUT/doctor.json"
dump doctor.err "$OUT/doctor.err"
# What one traced send costs through each hook type on this kernel (tracepoints, sonde's path,
# against fentry + fexit and fexit alone): informational, printed under the table.
"$SONDE" doctor --hook-cost --json --iterations "${HOOK_ITERATIONS:-5000}" --rounds 11 \
    >"$OUT/hookcost.json" 2>"$OUT/hookcost.err"
say hookcost-exit $?
dump hookcost.json "$OUT/hookcost.json"
dump hookcost.err "$OUT/hookcost.err"

# Only the peers are traced: they run in a cgroup of their own (on the host, nothing else is
# touched). Spans go out every 200 ms instead of every 5 s.
cg="$CG2/sonde-vm-test-$$"
mkdir "$cg"
OTEL_BSP_SCHEDULE_DELAY=200 "$SONDE" run --cgroup "$cg" --output jsonl \
    --output-file "$OUT/spans.jsonl" --summary-json "$OUT/summary.json" \
    --metrics-address "127.0.0.1:$MPORT" --duration 600 2>"$OUT/sonde.err" &
sonde=$!
in_cg() { sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" "$@"; }
if "$PEER" wait-ready "127.0.0.1:$MPORT" 240 "$sonde"; then
    say ready "$(date +%s)"
    in_cg "$PEER" serve "$OUT/port" >"$OUT/server.log" 2>&1 &
    server=$!
    port=$("$PEER" wait-file "$OUT/port" 60)
    in_cg "$PEER" get "127.0.0.1:$port" /vm-h1 >"$OUT/clients.log" 2>&1
    say h1-client-exit $?
    in_cg "$PEER" h2get "127.0.0.1:$port" /vm-h2 >>"$OUT/clients.log" 2>&1
    say h2-client-exit $?
    "$PEER" wait-lines "$OUT/spans.jsonl" /vm-h1 2 60
    "$PEER" wait-lines "$OUT/spans.jsonl" /vm-h2 2 60
    # Everything left in the test's cgroup: the server ($server is the subshell around it).
    kill $(cat "$cg/cgroup.procs") 2>/dev/null
    wait "$server" 2>/dev/null
else
    say ready never
fi
kill -INT "$sonde"
wait "$sonde"
say run-exit $?
# The kernel frees a cgroup a moment after its last process is gone.
for _ in 1 2 3 4 5; do
    rmdir "$cg" 2>/dev/null && break
    sleep 1
done
[ -d "$cg" ] && say leftover "$(cat "$cg/cgroup.procs" | tr '\n' ' ')"
dump server.log "$OUT/server.log"
dump clients.log "$OUT/clients.log"
dump spans.jsonl "$OUT/spans.jsonl"
dump summary.json "$OUT/summary.json"
dump sonde.err "$OUT/sonde.err"
say done "$(date +%s)"
if [ "$mode" = vm ]; then
    sync
    poweroff -f
fi
