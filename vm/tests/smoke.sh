# Smoke test for the VM lane: kernel, binary, and a soft-dirty round trip
# done with busybox tools only (clear_refs + /proc/PID/pagemap bit 55).
set -u
echo "uname -r: $(uname -r)"
/bin/uffd-dirty --version || exit 1

# Count the soft-dirty pages in the private writable mappings of PID $1.
soft_dirty_pages() {
    total=0
    while read -r range perms rest; do
        case "$perms" in rw-p) ;; *) continue ;; esac
        start=$((0x${range%-*})) end=$((0x${range#*-}))
        n=$(dd if=/proc/$1/pagemap bs=8 skip=$((start / 4096)) count=$(((end - start) / 4096)) 2>/dev/null \
            | od -An -v -tx8 | awk '{ for (i = 1; i <= NF; i++) if (index("89abcdef", substr($i, 3, 1))) c++ } END { print c + 0 }')
        total=$((total + n))
    done </proc/$1/maps
    echo "$total"
}

[ -e /proc/self/clear_refs ] || { echo "soft-dirty: /proc/self/clear_refs missing"; exit 1; }
mkfifo /tmp/fifo
# Target: a shell blocked in read() on a FIFO; it writes memory only when fed a line.
sh -c 'while read -r line; do x="$x$line"; done' </tmp/fifo &
target=$!
exec 3>/tmp/fifo            # open the write end (unblocks the target's open)
sleep 0.3
before=$(soft_dirty_pages "$target")
echo 4 >/proc/$target/clear_refs
after_clear=$(soft_dirty_pages "$target")
echo "some line that makes the target write to its heap and stack" >&3
sleep 0.3
after_write=$(soft_dirty_pages "$target")
exec 3>&-
wait "$target"
echo "soft-dirty pages: fresh=$before after-clear_refs=$after_clear after-write=$after_write"
if [ "$before" -gt 0 ] && [ "$after_clear" -eq 0 ] && [ "$after_write" -gt 0 ]; then
    echo "soft-dirty round trip: OK"
else
    echo "soft-dirty round trip: FAILED" >&2
    exit 1
fi
