#!/usr/bin/env bash
# vm/bench.sh — `uffd-dirty bench` inside a Debian VM (vm/run.sh), for the method this host's
# kernel lacks: soft-dirty. Prints the bench's Markdown tables.
set -euo pipefail

prog=vm/bench.sh
usage() {
    cat <<'EOF'
Usage: vm/bench.sh [options] [-- BENCH_ARGS...]

Builds the static uffd-dirty (target/vm-static, as tests/vm.rs does), boots
Debian's 6.12 kernel under QEMU with vm/run.sh (6.1 lacks PAGEMAP_SCAN), runs
`uffd-dirty bench` there and prints its Markdown tables on stdout after a line
naming this command (every method, and each one ÷ pagemap-scan).
TCG emulation: compare methods within one run, never absolute times.

Options:
  --mem MIB          guest memory (default 6144: the largest target, 4 GiB, plus the
                     guest; QEMU takes host memory only as the guest touches it)
  --timeout SECONDS  whole-VM time limit (default 900; the default run takes 1–2 min)
  --thp MODE         guest transparent_hugepage= (default madvise, as on the host; Debian's
                     own default is always: the populated target is then huge pages, which
                     soft-dirty reports 512 pages at a time and uffd-wp splits)
  --accel tcg|kvm    default tcg (KVM fails on this machine, see vm/README.md)
  -h, --help         this text

BENCH_ARGS go to `uffd-dirty bench` as they are. Defaults, each used unless
that flag is among BENCH_ARGS: --sizes 256M,2G,4G --fractions 0,0.01,0.1 --rounds 5
--slowdown-size 256M.
Example: vm/bench.sh -- --sizes 256M --rounds 5
With the redis section (--sections redis), Debian's redis-server and
redis-benchmark are installed here if missing and copied into the guest.

Environment: UFFD_DIRTY_STATIC_BIN names a prebuilt static binary (no build).
EOF
}
die_usage() { echo "$prog: $*" >&2; echo "Try '$prog --help'." >&2; exit 2; }

kernel=6.12 mem=6144 timeout_s=900 accel=tcg thp=madvise
# The command line as typed, for the output's first line; quoted only where the shell needs it.
cmdline=
for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./,:=+-]+$ ]]; then cmdline+=" $a"; else cmdline+=" $(printf '%q' "$a")"; fi
done
while [ $# -gt 0 ]; do
    case "$1" in
        --mem) mem=${2-}; shift 2 || die_usage "--mem needs a value" ;;
        --timeout) timeout_s=${2-}; shift 2 || die_usage "--timeout needs a value" ;;
        --accel) accel=${2-}; shift 2 || die_usage "--accel needs a value" ;;
        --thp) thp=${2-}; shift 2 || die_usage "--thp needs a value" ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) die_usage "unknown argument '$1'" ;;
    esac
done
case "$thp" in always|madvise|never) ;; *) die_usage "--thp must be always, madvise or never" ;; esac
user_args=("$@")

# Defaults: the size trend of issue #8 (256 MiB, 2 GiB) and its 4 GiB target, in about a minute of
# TCG. Five rounds, as medians of three moved by up to 1.5x between runs on this shared machine.
# A bench flag repeated appends (clap), so a default is dropped when the user gives that flag.
defaults=(--sizes '256M,2G,4G' --fractions '0,0.01,0.1' --rounds 5 --slowdown-size 256M)
bench_args=()
for ((i = 0; i < ${#defaults[@]}; i += 2)); do
    flag=${defaults[i]} given=0
    for a in ${user_args[@]+"${user_args[@]}"}; do
        case "$a" in "$flag" | "$flag"=*) given=1 ;; esac
    done
    [ "$given" = 1 ] || bench_args+=("$flag" "${defaults[i + 1]}")
done
bench_args+=(${user_args[@]+"${user_args[@]}"})

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=${UFFD_DIRTY_STATIC_BIN:-}
if [ -z "$bin" ]; then
    # Same command and target dir as tests/vm.rs, so either one reuses the other's build.
    RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=target/vm-static \
        cargo build --release --locked --bin uffd-dirty --target x86_64-unknown-linux-gnu >&2
    bin=target/vm-static/x86_64-unknown-linux-gnu/release/uffd-dirty
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/uffd-dirty-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The VM cannot take arguments: bake them into the script as `set -- ...` (as tests/vm.rs does),
# single-quoted for busybox sh.
{
    printf 'set --'
    for a in "${bench_args[@]}"; do printf " '%s'" "${a//\'/\'\\\'\'}"; done
    printf '\n'
    cat vm/tests/bench.sh
} >"$work/test.sh"

# The redis section runs Debian's redis-server and redis-benchmark in the guest: installed here
# if missing, and carried into the initramfs with the shared libraries they load.
adds=()
if [[ " ${bench_args[*]} " =~ [[:space:]=,]redis[[:space:],] ]]; then
    if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
        apt-get update -qq >&2
        apt-get install -y -qq -o DPkg::Lock::Timeout=600 redis-server redis-tools >&2
    fi
    for program in redis-server redis-benchmark; do
        path=$(command -v "$program")
        adds+=(--add "$path:/bin/$program")
        while read -r lib; do
            adds+=(--add "$lib:$lib")
        done < <(ldd "$path" | grep -o '/[^ ]*' | sort -u)
    done
fi

start=$SECONDS
vm/run.sh ${adds[@]+"${adds[@]}"} --kernel "$kernel" --mem "$mem" --smp 2 --timeout "$timeout_s" --accel "$accel" \
    --append "transparent_hugepage=$thp" --bin "$bin" -- "$work/test.sh" >"$work/bench.md"
took=$((SECONDS - start))

echo "Generated by \`$prog$cmdline\` in $took s: \`uffd-dirty bench ${bench_args[*]}\`" \
    "in a QEMU $accel VM (Debian $kernel kernel, $mem MiB, 2 vCPUs, transparent_hugepage=$thp)."
[ "$accel" = tcg ] && echo "The numbers come from TCG emulation: only ratios between methods" \
    "within this run mean something, not absolute times."
echo
cat "$work/bench.md"
