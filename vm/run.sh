#!/usr/bin/env bash
# vm/run.sh — run a shell script inside a throw-away QEMU VM that boots a stock
# Debian kernel, with a static uffd-dirty binary in its initramfs.
#
# Usage: vm/run.sh --kernel 6.12|6.1 --bin STATIC_BINARY [options] -- SCRIPT_FILE
# See vm/README.md, or run `vm/run.sh --help`.
set -euo pipefail

prog=vm/run.sh
usage() {
    cat <<'EOF'
Usage: vm/run.sh --kernel 6.12|6.1 --bin STATIC_BINARY [options] -- SCRIPT_FILE

Boots a stock Debian kernel of the given series under QEMU (TCG by default) with
an initramfs holding busybox, STATIC_BINARY as /bin/uffd-dirty and SCRIPT_FILE
as /test.sh, runs `sh /test.sh` as root and powers off.

The script's stdout is printed on stdout, its stderr on stderr (two separate
serial ports, so kernel messages never mix into them), and run.sh exits with
the script's exit status.

Options:
  --kernel SERIES     6.12 or 6.1 (required); newest Debian amd64 image of that series
  --bin PATH          static x86_64 binary, installed as /bin/uffd-dirty (required)
  --timeout SECONDS   time limit for the whole VM, boot included, counted in CPU seconds
                      QEMU got (default 120), so a busy host slows the run without
                      failing it
  --max-wall SECONDS  wall-clock limit however busy the host (default 1800)
  --accel tcg|kvm     default tcg (the nested KVM here fails on stock kernels)
  --cpu MODEL         QEMU -cpu model (default: QEMU's own for tcg, host for kvm)
  --mem MIB           guest memory (default 1024)
  --smp N             guest CPUs (default 2)
  --append ARGS       extra kernel command-line arguments
  --add SRC:DEST      extra file for the initramfs (repeatable), e.g. --add x.sh:/bin/x.sh
  --dmesg             print the guest's full kernel log on stderr after the run
  --console           print the serial console log (boot messages) on stderr after the run
  -h, --help          this text

Exit status: the script's own, 124 on timeout, 125 when the VM could not be set
up or booted or died before the script finished (console log on stderr), 77 when
it cannot run on this host at all (not root and QEMU missing, no apt-get), 2 on
usage errors.
Environment: UFFD_DIRTY_VM_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/uffd-dirty/vm),
UFFD_DIRTY_VM_KERNEL_PKG (force an exact Debian package name, e.g. for bisecting).
EOF
}

die_usage() { echo "$prog: $*" >&2; echo "Try '$prog --help'." >&2; exit 2; }
die_setup() { echo "$prog: $*" >&2; exit 125; }
die_skip() { echo "$prog: cannot run here: $*" >&2; exit 77; }
note() { echo "$prog: $*" >&2; }

# ---------------------------------------------------------------- arguments
kernel_series='' bin='' script='' timeout_s=120 max_wall=1800 accel=tcg cpu='' mem=1024 smp=2 extra_append=''
want_dmesg=0 want_console=0
adds=()
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel_series=${2-}; shift 2 || die_usage "--kernel needs a value" ;;
        --kernel=*) kernel_series=${1#*=}; shift ;;
        --bin) bin=${2-}; shift 2 || die_usage "--bin needs a value" ;;
        --bin=*) bin=${1#*=}; shift ;;
        --timeout) timeout_s=${2-}; shift 2 || die_usage "--timeout needs a value" ;;
        --timeout=*) timeout_s=${1#*=}; shift ;;
        --max-wall) max_wall=${2-}; shift 2 || die_usage "--max-wall needs a value" ;;
        --max-wall=*) max_wall=${1#*=}; shift ;;
        --accel) accel=${2-}; shift 2 || die_usage "--accel needs a value" ;;
        --accel=*) accel=${1#*=}; shift ;;
        --cpu) cpu=${2-}; shift 2 || die_usage "--cpu needs a value" ;;
        --cpu=*) cpu=${1#*=}; shift ;;
        --mem) mem=${2-}; shift 2 || die_usage "--mem needs a value" ;;
        --mem=*) mem=${1#*=}; shift ;;
        --smp) smp=${2-}; shift 2 || die_usage "--smp needs a value" ;;
        --smp=*) smp=${1#*=}; shift ;;
        --append) extra_append=${2-}; shift 2 || die_usage "--append needs a value" ;;
        --append=*) extra_append=${1#*=}; shift ;;
        --add) adds+=("${2-}"); shift 2 || die_usage "--add needs a value" ;;
        --add=*) adds+=("${1#*=}"); shift ;;
        --dmesg) want_dmesg=1; shift ;;
        --console) want_console=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; [ $# -eq 1 ] || die_usage "expected exactly one SCRIPT_FILE after --"; script=$1; shift ;;
        *) die_usage "unknown argument '$1'" ;;
    esac
done
case "$kernel_series" in
    6.12|6.1) ;;
    '') die_usage "--kernel is required (6.12 or 6.1)" ;;
    *) die_usage "--kernel must be 6.12 or 6.1, not '$kernel_series'" ;;
esac
[ -n "$bin" ] || die_usage "--bin is required"
[ -f "$bin" ] || die_usage "--bin: no such file: $bin"
[ -n "$script" ] || die_usage "missing '-- SCRIPT_FILE'"
[ -f "$script" ] || die_usage "no such script: $script"
[[ "$timeout_s" =~ ^[0-9]+$ && "$timeout_s" -gt 0 ]] || die_usage "--timeout must be a positive integer"
[[ "$max_wall" =~ ^[0-9]+$ && "$max_wall" -gt 0 ]] || die_usage "--max-wall must be a positive integer"
[[ "$mem" =~ ^[0-9]+$ ]] || die_usage "--mem must be an integer (MiB)"
[[ "$smp" =~ ^[0-9]+$ ]] || die_usage "--smp must be an integer"
case "$accel" in tcg|kvm) ;; *) die_usage "--accel must be tcg or kvm" ;; esac
for a in ${adds[@]+"${adds[@]}"}; do
    case "$a" in *:/*) [ -f "${a%%:*}" ] || die_usage "--add: no such file: ${a%%:*}" ;;
        *) die_usage "--add wants SRC:/ABSOLUTE/DEST, got '$a'" ;; esac
done
if file -b "$bin" 2>/dev/null | grep -q 'dynamically linked'; then
    die_usage "--bin $bin is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static'"
fi

cache=${UFFD_DIRTY_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/uffd-dirty/vm}
mkdir -p "$cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/uffd-dirty-vm.XXXXXX")
qemu_pid=
cleanup() {
    [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- host tools
apt_updated=0
apt_update_once() {
    [ "$apt_updated" = 1 ] && return 0
    apt_updated=1
    note "apt-get update"
    apt-get update -qq -o DPkg::Lock::Timeout=600 >"$work/apt-update.log" 2>&1 || { cat "$work/apt-update.log" >&2; note "apt-get update failed"; }
}
missing_pkgs() {
    need_pkgs=()
    command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
    [ -x /bin/busybox ] && file -b /bin/busybox 2>/dev/null | grep -q 'statically linked' || need_pkgs+=(busybox-static)
    command -v cpio >/dev/null || need_pkgs+=(cpio)
    command -v gzip >/dev/null || need_pkgs+=(gzip)
    command -v dpkg-deb >/dev/null || need_pkgs+=(dpkg)
    command -v flock >/dev/null && command -v timeout >/dev/null || need_pkgs+=(util-linux coreutils)
    command -v file >/dev/null || need_pkgs+=(file)
}
missing_pkgs
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die_skip "missing ${need_pkgs[*]} and not root: apt-get install -y ${need_pkgs[*]}"
    command -v apt-get >/dev/null || die_skip "missing ${need_pkgs[*]} and no apt-get to install them (not Debian?)"
    # Two runs at once (cargo test runs both VM tests in parallel) must not both call apt:
    # one installs, the other waits and then finds everything there. apt itself waits for a
    # dpkg lock held by anyone else.
    mkdir -p "$cache"
    exec 8>"$cache/.apt-lock"
    command -v flock >/dev/null && flock 8
    missing_pkgs
    if [ ${#need_pkgs[@]} -gt 0 ]; then
        apt_update_once
        note "installing ${need_pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=600 "${need_pkgs[@]}" \
            >"$work/apt-install.log" 2>&1 || { cat "$work/apt-install.log" >&2; die_setup "apt-get install ${need_pkgs[*]} failed"; }
    fi
    exec 8>&-
fi
busybox=/bin/busybox
file -b "$busybox" | grep -q 'statically linked' || die_setup "$busybox is not the static busybox (install busybox-static)"

# ---------------------------------------------------------------- kernel
# Candidate package names of the series: generic amd64 flavour only (no cloud/rt,
# no -unsigned/-dbg). 6.1: linux-image-6.1.0-N-amd64; 6.12: linux-image-6.12.N+debM-amd64.
series_re="^linux-image-${kernel_series//./\\.}\\.[0-9].*-amd64\$"
list_candidates() {  # prints "VERSION NAME" lines, newest first
    local names
    names=$(apt-cache search --names-only "$series_re" 2>/dev/null | awk '{print $1}' \
        | grep -Ev -- '-(cloud|rt)-amd64$' || true)
    [ -n "$names" ] || return 0
    # shellcheck disable=SC2086
    apt-cache policy $names 2>/dev/null | awk '
        /^[^ ].*:$/ { name = substr($0, 1, length($0) - 1) }
        /^  Candidate:/ && $2 != "(none)" { print $2, name }' \
    | {
        # Debian version order: insertion sort with dpkg --compare-versions.
        local -a vs=() ns=()
        local i j
        while read -r v n; do
            i=${#vs[@]}
            while [ "$i" -gt 0 ] && dpkg --compare-versions "$v" gt "${vs[$((i-1))]}"; do
                vs[$i]=${vs[$((i-1))]}; ns[$i]=${ns[$((i-1))]}; i=$((i-1))
            done
            vs[$i]=$v; ns[$i]=$n
        done
        for ((j = 0; j < ${#vs[@]}; j++)); do echo "${vs[$j]} ${ns[$j]}"; done
    }
}

fetch_kernel() {  # $1 = package name, $2 = version; leaves $cache/kernels/NAME_VERSION/vmlinuz
    local name=$1 ver=$2 dir dl deb tmp
    dir="$cache/kernels/${name}_${ver}"
    [ -s "$dir/vmlinuz" ] && return 0
    dl="$work/dl"; rm -rf "$dl"; mkdir -p "$dl"
    note "downloading $name ($ver)"
    if ! (cd "$dl" && apt-get download -qq -o APT::Sandbox::User=root "$name=$ver") >"$work/apt-download.log" 2>&1; then
        cat "$work/apt-download.log" >&2
        return 1
    fi
    deb=$(ls "$dl"/*.deb 2>/dev/null | head -n 1)
    [ -n "$deb" ] || return 1
    tmp=$(mktemp -d "$cache/kernels/.tmp.XXXXXX"); chmod 755 "$tmp"
    # Only ./boot is needed: skip the ~400 MB of modules.
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/*' 2>/dev/null || true
    local vmlinuz; vmlinuz=$(ls "$tmp"/boot/vmlinuz-* 2>/dev/null | head -n 1)
    if [ -z "$vmlinuz" ]; then rm -rf "$tmp"; note "$name has no /boot/vmlinuz-*"; return 1; fi
    mv "$vmlinuz" "$tmp/vmlinuz"
    ls "$tmp"/boot/config-* >/dev/null 2>&1 && mv "$tmp"/boot/config-* "$tmp/config"
    rm -rf "${tmp:?}/boot" "$dl"
    echo "$name $ver" >"$tmp/package"
    rm -rf "$dir"; mv "$tmp" "$dir"
    # Drop older kernels of the same series (a newer one is in place now).
    local old
    [ -z "${UFFD_DIRTY_VM_KERNEL_PKG:-}" ] && for old in "$cache"/kernels/linux-image-"$kernel_series".[0-9]*-amd64_*; do
        [ -d "$old" ] && [ "$old" != "$dir" ] && rm -rf "$old"
    done
    return 0
}

get_candidates() {  # "VERSION NAME" lines, newest first
    if [ -n "${UFFD_DIRTY_VM_KERNEL_PKG:-}" ]; then
        apt-cache policy "$UFFD_DIRTY_VM_KERNEL_PKG" 2>/dev/null \
            | awk -v n="$UFFD_DIRTY_VM_KERNEL_PKG" '/^  Candidate:/ && $2 != "(none)" { print $2, n }'
    else
        list_candidates
    fi
}

resolve_kernel() {
    mkdir -p "$cache/kernels"
    exec 9>"$cache/.lock"
    flock 9
    # Fast path: same apt lists as when this series was last resolved, kernel cached.
    local key memo line
    key="$kernel_series ${UFFD_DIRTY_VM_KERNEL_PKG:-} $(stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* 2>/dev/null | md5sum | cut -c1-32)"
    memo="$cache/kernels/resolved-$kernel_series${UFFD_DIRTY_VM_KERNEL_PKG:+-pinned}"
    if [ -f "$memo" ] && [ "$(head -n 1 "$memo")" = "$key" ]; then
        line=$(sed -n 2p "$memo")
        if [ -s "$cache/kernels/${line#* }_${line%% *}/vmlinuz" ]; then
            kernel_pkg="${line#* } ${line%% *}"; vmlinuz="$cache/kernels/${line#* }_${line%% *}/vmlinuz"
            flock -u 9; return 0
        fi
    fi
    local cands v n
    cands=$(get_candidates)
    if [ -z "$cands" ]; then apt_update_once; cands=$(get_candidates); fi
    if [ -n "$cands" ]; then
        read -r v n <<<"$cands"
        if ! fetch_kernel "$n" "$v" && [ "$apt_updated" = 0 ]; then
            # Perhaps stale apt lists (the mirror dropped that version): refresh once.
            apt_update_once; cands=$(get_candidates)
        fi
        # Newest first; an older one if a download fails.
        while read -r v n; do
            [ -n "$n" ] || continue
            if fetch_kernel "$n" "$v"; then
                kernel_pkg="$n $v"; vmlinuz="$cache/kernels/${n}_${v}/vmlinuz"
                # Memo only if apt's lists did not change meanwhile (apt-get update).
                [ "$apt_updated" = 1 ] || printf '%s\n%s %s\n' "$key" "$v" "$n" >"$memo"
                flock -u 9; return 0
            fi
            note "could not fetch $n $v, trying an older one"
        done <<<"$cands"
    fi
    # Offline: newest cached kernel of the series.
    local d
    d=$(ls -d "$cache"/kernels/linux-image-"$kernel_series".[0-9]*-amd64_* 2>/dev/null | sort -V | tail -n 1 || true)
    flock -u 9
    if [ -n "$d" ] && [ -s "$d/vmlinuz" ]; then
        note "apt has no $kernel_series kernel; using cached $(basename "$d")"
        kernel_pkg=$(cat "$d/package"); vmlinuz="$d/vmlinuz"; return 0
    fi
    die_setup "no Debian linux-image-$kernel_series.*-amd64 package could be resolved or downloaded (apt-cache search '$series_re')"
}
kernel_pkg='' vmlinuz=''
resolve_kernel

# ---------------------------------------------------------------- initramfs
# Two concatenated cpio archives (the kernel unpacks both): a base one with
# busybox, its applet links and /init, cached per busybox + run.sh version, and
# a per-run one with the binary, the script and the --add files.
mkdir -p "$cache/initramfs"
base_key=$(cat "$busybox" "${BASH_SOURCE[0]}" | md5sum | cut -c1-16)
base_cpio="$cache/initramfs/base-$base_key.cpio.gz"
if [ ! -s "$base_cpio" ]; then
    base="$work/base"
    mkdir -p "$base"/{bin,dev,proc,sys,tmp,root,etc,run}
    cp "$busybox" "$base/bin/busybox"
    (cd "$base/bin" && for applet in $("$busybox" --list); do
        [ -e "$applet" ] || ln -s busybox "$applet"; done)
    ln -s bin "$base/sbin"
    mkdir -p "$base/usr"; ln -s ../bin "$base/usr/bin"; ln -s ../bin "$base/usr/sbin"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$base/etc/passwd"
    echo 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >>"$base/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$base/etc/group"
cat >"$base/init" <<'EOF'
#!/bin/sh
# PID 1 of the uffd-dirty test VM. Console (ttyS0): kernel log and markers.
# ttyS1: the script's stdout. ttyS2: the script's stderr.
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
[ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname uffd-vm
ip link set lo up 2>/dev/null
echo "VM-TEST-START kernel=$(uname -r)" >/dev/console
cd /
sh /test.sh </dev/null >/dev/ttyS1 2>/dev/ttyS2
rc=$?
if grep -qw uffdvm.dmesg=1 /proc/cmdline; then
    echo "VM-DMESG-BEGIN" >/dev/console
    dmesg >/dev/console
    echo "VM-DMESG-END" >/dev/console
fi
# Kernel warnings are below the 'quiet' console level: surface them.
dmesg | grep -E 'WARNING:|BUG:|Oops|general protection|Call Trace|soft lockup|hung_task' \
    | sed 's/^/VM-KERNEL-WARN /' >/dev/console
echo "VM-EXIT-STATUS=$rc" >/dev/console
sync
poweroff -f
echo o >/proc/sysrq-trigger
sleep 5
EOF
    chmod 0755 "$base/init"
    tmpcpio=$(mktemp "$cache/initramfs/.tmp.XXXXXX")
    (cd "$base" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -1 >"$tmpcpio")
    mv "$tmpcpio" "$base_cpio"
    find "$cache/initramfs" -name 'base-*.cpio.gz' ! -name "base-$base_key.cpio.gz" -delete 2>/dev/null || true
    rm -rf "$base"
fi
root="$work/root"
mkdir -p "$root/bin"
cp "$bin" "$root/bin/uffd-dirty"; chmod 0755 "$root/bin/uffd-dirty"
cp "$script" "$root/test.sh"; chmod 0755 "$root/test.sh"
for a in ${adds[@]+"${adds[@]}"}; do
    src=${a%%:*} dest=${a#*:}
    mkdir -p "$root$(dirname "$dest")"; cp "$src" "$root$dest"
done
initrd="$work/initrd.cpio.gz"
cp "$base_cpio" "$initrd"
(cd "$root" && find . -mindepth 1 -print0 | cpio --null -o -H newc -R 0:0 --quiet | gzip -1 >>"$initrd")

# ---------------------------------------------------------------- boot
console="$work/console.log" out="$work/stdout.log" err="$work/stderr.log"
: >"$console"; : >"$out"; : >"$err"
# Not quiet: the boot messages on the console are the boot's progress, and what a failure shows.
append="console=ttyS0 panic=-1 oops=panic"
[ "$want_dmesg" = 1 ] && append+=" uffdvm.dmesg=1"
[ -n "$extra_append" ] && append+=" $extra_append"
qemu=(qemu-system-x86_64 -no-user-config -nodefaults -display none -no-reboot
      -m "$mem" -smp "$smp" -kernel "$vmlinuz" -initrd "$initrd" -append "$append"
      -serial "file:$console" -serial "file:$out" -serial "file:$err"
      -monitor none -nic none)
qemu+=(-accel "$accel")
if [ -n "$cpu" ]; then qemu+=(-cpu "$cpu"); elif [ "$accel" = kvm ]; then qemu+=(-cpu host); fi

note "booting $kernel_pkg ($accel, ${mem} MiB, ${smp} CPUs, timeout ${timeout_s} CPU-s, ${max_wall}s wall)"
clk_tck=$(getconf CLK_TCK)
# CPU seconds QEMU has had so far (user + system), from /proc/PID/stat.
qemu_cpu() { awk -v t="$clk_tck" '{ sub(/^.*\) /, ""); printf "%d", ($12 + $13) / t }' "/proc/$qemu_pid/stat" 2>/dev/null || echo 0; }
qemu_running() { [ -r "/proc/$qemu_pid/stat" ] && ! awk '{ sub(/^.*\) /, ""); exit $1 != "Z" }' "/proc/$qemu_pid/stat"; }
t0=$(date +%s.%N)
start=$(date +%s)
set +e
"${qemu[@]}" </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!
timed_out='' booted='' cpu=0
while qemu_running; do
    sleep 0.5
    wall=$(( $(date +%s) - start ))
    cpu=$(qemu_cpu)
    if [ -z "$booted" ] && grep -q '^VM-TEST-START' "$console" 2>/dev/null; then
        booted=$wall
        note "booted in ${wall}s (${cpu} CPU-s)"
    fi
    if [ "$cpu" -ge "$timeout_s" ] || [ "$wall" -ge "$max_wall" ]; then
        timed_out="after ${wall}s wall, ${cpu} CPU-s for QEMU"
        kill -TERM "$qemu_pid" 2>/dev/null; sleep 2; kill -KILL "$qemu_pid" 2>/dev/null
        break
    fi
done
wait "$qemu_pid"
qrc=$?
qemu_pid=
set -e
t1=$(date +%s.%N)
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

tr -d '\r' <"$out"
tr -d '\r' <"$err" >&2
tr -d '\r' <"$console" >"$work/console.txt"
show_console() { echo "----- VM console ($kernel_pkg) -----" >&2; cat "$work/console.txt" >&2; echo "----- end of console -----" >&2; }
sed -n 's/^VM-KERNEL-WARN /vm kernel: /p' "$work/console.txt" >&2
if [ "$want_dmesg" = 1 ]; then
    sed -n '/^VM-DMESG-BEGIN$/,/^VM-DMESG-END$/p' "$work/console.txt" | sed '1d;$d' | sed 's/^/vm dmesg: /' >&2
fi
[ "$want_console" = 1 ] && show_console

status=$(sed -n 's/^VM-EXIT-STATUS=\([0-9][0-9]*\)$/\1/p' "$work/console.txt" | tail -n 1)
if [ -n "$status" ]; then
    note "script exited $status ($kernel_pkg, ${elapsed}s)"
    exit "$status"
fi
if [ -n "$timed_out" ]; then
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    if [ -z "$booted" ]; then phase="before the script started"; else phase="in the script (booted in ${booted}s)"; fi
    note "timeout $timed_out, $phase ($kernel_pkg; host load $load on $(nproc) CPUs); console log follows"
    [ -s "$work/qemu.log" ] && { echo "----- qemu -----" >&2; cat "$work/qemu.log" >&2; }
    [ "$want_console" = 1 ] || show_console
    exit 124
fi
if grep -q '^VM-TEST-START' "$work/console.txt"; then
    note "the VM died while the script ran (qemu exit $qrc, ${elapsed}s); console log follows"
else
    note "the VM did not boot to the script (qemu exit $qrc, ${elapsed}s); console log follows"
fi
[ -s "$work/qemu.log" ] && { echo "----- qemu -----" >&2; cat "$work/qemu.log" >&2; }
[ "$want_console" = 1 ] || show_console
exit 125
