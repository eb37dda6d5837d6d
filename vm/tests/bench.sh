# shellcheck shell=sh
# `uffd-dirty bench` inside the VM: its Markdown tables on stdout (they name the guest's
# kernel, CPUs, memory and THP mode, and give each method ÷ pagemap-scan).
# Usage inside the VM: sh /test.sh BENCH_ARGS... (vm/bench.sh bakes them in with `set --`).
exec /bin/uffd-dirty bench "$@"
