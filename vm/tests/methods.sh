# Ground truth for every tracking method, inside the VM: a writer logs what it writes while
# `track --pid` follows it; each run's records and log go to stdout between markers, and the
# host-side test (tests/vm.rs) holds them against each other page for page.
# Usage inside the VM: sh /test.sh METHOD...
echo "uname -r: $(uname -r)"
echo "check-json: $(/bin/uffd-dirty check --format json 2>/dev/null)"
/bin/uffd-dirty check > /dev/null 2>&1
echo "check-status: $?"
status=0
for method in "$@"; do
    dir=/tmp/$(echo "$method" | tr ':' '-')
    mkdir -p "$dir"
    rm -f "$dir/go"
    mkfifo "$dir/go"
    case "$method" in
    scenario:*)
        # A living-address-space scenario (its own go/done protocol), tracked by pagemap-scan.
        /bin/uffd-dirty scenario "${method#scenario:}" --steps 60 \
            --log "$dir/writer.log" < "$dir/go" > "$dir/writer.out" 2> "$dir/writer.err" &
        ;;
    *)
        # soft-dirty-epoll: the writer waits in epoll_wait(-1), its only thread, while the
        # soft-dirty attach freezes it: it must not see EINTR (exit 3).
        wait_mode=stdin
        [ "$method" = soft-dirty-epoll ] && wait_mode=epoll-only
        /bin/uffd-dirty writer --pages 512 --bursts 30 --burst-pages 12 --gap 5ms --wait $wait_mode --hold \
            --log "$dir/writer.log" < "$dir/go" > "$dir/writer.out" 2> "$dir/writer.err" &
        ;;
    esac
    writer=$!
    exec 3> "$dir/go"
    while ! grep -q ready "$dir/writer.out" 2>/dev/null; do sleep 0.05; done
    track_method=$method
    case "$method" in scenario:*) track_method=pagemap-scan ;; soft-dirty-epoll) track_method=soft-dirty ;; esac
    if [ "$method" = compare ]; then
        /bin/uffd-dirty compare --pid "$writer" --format json --interval 30ms \
            > "$dir/track.json" 2> "$dir/track.err" &
    else
        /bin/uffd-dirty track --pid "$writer" --method "$track_method" --format json --interval 30ms \
            > "$dir/track.json" 2> "$dir/track.err" &
    fi
    tracker=$!
    n=0
    while ! grep -q '"type":"\(compare-\)\{0,1\}start"' "$dir/track.json" 2>/dev/null; do
        sleep 0.05
        n=$((n + 1))
        if [ $n -gt 200 ] || ! kill -0 $tracker 2>/dev/null; then break; fi
    done
    echo g >&3
    while ! grep -q done "$dir/writer.out" 2>/dev/null; do sleep 0.05; done
    sleep 0.1
    kill -INT $tracker 2>/dev/null
    wait $tracker
    track_status=$?
    exec 3>&-
    wait $writer
    writer_status=$?
    echo "=== $method track-status $track_status writer-status $writer_status"
    echo "=== $method track-stderr"
    cat "$dir/track.err"
    echo "=== $method records"
    cat "$dir/track.json"
    echo "=== $method log"
    cat "$dir/writer.log"
    echo "=== $method end"
    [ $track_status -eq 0 ] && [ $writer_status -eq 0 ] || status=1
done
exit $status
