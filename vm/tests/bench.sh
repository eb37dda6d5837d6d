# shellcheck shell=sh
# `uffd-dirty bench` inside the VM. stdout is one JSON document, rendered on the host by
# vm/bench_render.py: {"machine": {...}, "rows": <bench --json>}. The machine facts travel with
# the rows because the host cannot see the guest (kernel, CPUs, memory, THP mode).
# Usage inside the VM: sh /test.sh BENCH_ARGS... (vm/bench.sh bakes them in with `set --`).
set -u
kernel=$(uname -r)
cpus=$(nproc)
mem_kib=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
# THP changes what soft-dirty reports (a written huge page is 512 dirty pages): record the mode.
thp=$(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)
echo "vm: kernel $kernel, $cpus CPUs, MemTotal $mem_kib KiB, THP ${thp:-?}, bench $*" >&2
printf '{"machine": {"kernel": "%s", "cpus": %s, "mem_total_kib": %s, "thp": "%s"},\n"rows": ' \
    "$kernel" "$cpus" "$mem_kib" "${thp:-unknown}"
/bin/uffd-dirty bench --json "$@"
rc=$?
echo '}'
exit $rc
