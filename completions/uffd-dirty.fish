# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_uffd_dirty_global_optspecs
    string join \n h/help V/version
end

function __fish_uffd_dirty_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_uffd_dirty_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_uffd_dirty_using_subcommand
    set -l cmd (__fish_uffd_dirty_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -s V -l version -d 'Print version'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "track" -d 'Track the dirty pages of a running process (--pid) or of a command it launches'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "compare" -d 'Run uffd-wp and soft-dirty tracking on the same target at once, and compare them'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "bench" -d 'Measure the harvest cost of every available method on the same workload (Markdown table)'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "bench-target" -d 'The benchmark\'s target process (used by `bench`)'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "demo" -d 'Launch a small built-in writer and track it live: see what the tool does in seconds'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "check" -d 'Report what this machine\'s kernel offers for dirty-page tracking, and what to fix'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "report" -d 'Render a recorded run (the output of `track --format json`) as a self-contained heatmap of time × address, with the write-rate curve and per-mapping totals'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "writer" -d 'A workload that writes pages in bursts and logs exactly which (used by the tests)'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "scenario" -d 'Ground-truth scenarios of a changing address space (used by the tests)'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "attach-helper" -d 'The attach helper (started by `track` itself: it borrows the target\'s thread)'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s p -l pid -d 'Process to attach to. It is never signalled, and it is left exactly as it was on exit' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s i -l interval -d 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s r -l range -d 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: the target\'s whole address space' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s n -l count -d 'Stop after N intervals (at least 1)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s d -l duration -d 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s m -l method -d 'How dirty pages are found' -r -f -a "pagemap-scan\t'userfaultfd async write-protect, harvested by PAGEMAP_SCAN with atomic re-protect'
pagemap-read\t'The same arming, harvested by plain reads of /proc/PID/pagemap (bit 57 clear = written) and re-protected with UFFDIO_WRITEPROTECT'
soft-dirty\t'clear_refs soft-dirty (pagemap bit 55), no userfaultfd; the target is frozen while its bits are read and cleared (see --no-freeze). Needs CONFIG_MEM_SOFT_DIRTY'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s f -l format -d 'Output format' -r -f -a "human\t'One line per delta for people'
json\t'NDJSON: one JSON object per line, for scripts'
bitmap\t'`SEQ START END HEX` per tracked range per delta: the dirty-page bitmap, bit i = page START + i*page_size, least significant bit first in each byte (track only)'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s o -l output -d 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel\'s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory\'s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner\'s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l arm -d 'How to apply the initial write-protection (auto: PAGEMAP_SCAN where the kernel has the PMD-hole fix, else UFFDIO_WRITEPROTECT). For testing both paths on one kernel' -r -f -a "auto\t''
pagemap-scan\t''
writeprotect\t''"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l json-bitmap -d 'Add each delta\'s dirty-page bitmap per tracked range to the JSON delta (`"bitmap"`)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l view -d 'Show a live picture of the tracked memory on the terminal instead of a stream. Each mapping (name and size in the left margin) is a block of rows of cells; every cell covers the same number of pages (in the header), so a mapping\'s rows are proportional to its size, with at least one row per mapping (a huge sparse reservation takes most of the screen: zoom into the others). A cell is brightest when written in the newest delta, then fades over 16 deltas (colours, or ░▒▓█ with NO_COLOR). Keys: j/k or arrows select a mapping, Enter/z zooms into it, Esc/u zooms out, ? explains, q or Ctrl-C stops (as SIGINT does). With --output FILE the records also go to FILE, as NDJSON (or --format bitmap). Needs a terminal on stdout'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l no-freeze -d 'With --method soft-dirty, do not stop the target while its bits are read and cleared: no pause for it, but a write between the read and the clear is lost'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l no-follow-exec -d 'End tracking (reason `exec`) when the target calls execve, instead of attaching to the new program and going on'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s p -l pid -d 'Process to attach to. It is never signalled, and it is left exactly as it was on exit' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s i -l interval -d 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s r -l range -d 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: the target\'s whole address space' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s n -l count -d 'Stop after N intervals (at least 1)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s d -l duration -d 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s f -l format -d 'Output format' -r -f -a "human\t'One line per delta for people'
json\t'NDJSON: one JSON object per line, for scripts'
bitmap\t'`SEQ START END HEX` per tracked range per delta: the dirty-page bitmap, bit i = page START + i*page_size, least significant bit first in each byte (track only)'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s o -l output -d 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel\'s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory\'s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner\'s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l sizes -d 'Tracked sizes, each optionally `@` the part populated (default all), e.g. `64M,1G,16G@1%`. A sparse case is populated in 2 MiB chunks spread over it' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l fractions -d 'Fractions of the populated pages dirtied before each harvest' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l rounds -d 'Harvests timed per case (the median is reported, with min and max); at least 1' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l slowdown-size -d 'Buffer size of the slowdown runs (all populated)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l slowdown-dirty -d 'Part of the slowdown buffer the target writes over and over' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l rates -d 'Harvest rates (per second) of the slowdown runs, 1 to 1000 (track\'s shortest --interval is 1ms)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l run-time -d 'How long each slowdown and footprint run lasts, from 1ms to 100y' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l methods -d 'Methods to measure (default: every one this kernel supports)' -r -f -a "pagemap-scan\t'userfaultfd async write-protect, harvested by PAGEMAP_SCAN with atomic re-protect'
pagemap-read\t'The same arming, harvested by plain reads of /proc/PID/pagemap (bit 57 clear = written) and re-protected with UFFDIO_WRITEPROTECT'
soft-dirty\t'clear_refs soft-dirty (pagemap bit 55), no userfaultfd; the target is frozen while its bits are read and cleared (see --no-freeze). Needs CONFIG_MEM_SOFT_DIRTY'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l sections -d 'Which measurements to run' -r -f -a "harvest\t''
attach\t''
slowdown\t''
footprint\t''"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l json -d 'Print JSON instead of Markdown tables'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench-target" -l pages -d 'Pages in the buffer' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench-target" -l populate-every -d 'Every how many 2 MiB chunks one is populated (1: all; 0: none)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench-target" -s h -l help -d 'Print help'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s i -l interval -d 'Time between harvests, from 1ms to 100y' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s d -l duration -d 'How long the demo runs. Longer than 100 years: until stopped' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -l log -d 'Also keep the writer\'s exact log of written pages here' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s f -l format -d 'Output format' -r -f -a "human\t'One line per delta for people'
json\t'NDJSON: one JSON object per line, for scripts'
bitmap\t'`SEQ START END HEX` per tracked range per delta: the dirty-page bitmap, bit i = page START + i*page_size, least significant bit first in each byte (track only)'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s o -l output -d 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel\'s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory\'s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner\'s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand check" -s f -l format -d 'Output format' -r -f -a "human\t'One line per delta for people'
json\t'NDJSON: one JSON object per line, for scripts'
bitmap\t'`SEQ START END HEX` per tracked range per delta: the dirty-page bitmap, bit i = page START + i*page_size, least significant bit first in each byte (track only)'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand check" -s o -l output -d 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel\'s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory\'s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner\'s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand report" -s o -l output -d 'Where to write the report, by the rules of `track --output` (a new file is created 0600; - or /dev/stdout: stdout). The extension picks the format: .html (the picture, the per-mapping table and a hover tooltip) or .svg (the picture alone); HTML on stdout' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand report" -s f -l format -d 'The report\'s format, whatever -o\'s name says' -r -f -a "html\t'The picture, the per-mapping table and a hover tooltip'
svg\t'The picture alone'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l pages -d 'Pages in the region' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l threads -d 'Writer threads; thread t owns the pages with index % threads == t' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l bursts -d 'Bursts per thread (0: until --run-for ends)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l burst-pages -d 'Pages written per burst' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l gap -d 'Pause between bursts' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l run-for -d 'Stop writing after this long (over 100 years: never)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l wait -d 'What to do before writing' -r -f -a "none\t'Start writing at once'
stdin\t'Block in read(2) on stdin until a byte arrives'
nanosleep\t'Sleep --sleep in one nanosleep(2) call, then start'
epoll\t'One thread blocks in epoll_wait(2) on stdin while the main thread spins'
epoll-only\t'The only thread blocks in epoll_wait(2) with no timeout on stdin'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l sleep -d 'Sleep length for --wait nanosleep' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l pre-write -d 'Pages [0, N) are written before waiting' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l pre-read -d 'Pages [pre-write, pre-write + N) are only read before waiting (zero page)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l spinner -d 'Run a thread that spins (so it is the one a tracker borrows) for this long, then exits' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l linger -d 'Pause after the last burst before exiting (or holding)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l pattern -r -f -a "random\t'Random pages'
wave\t'A window sliding through the region, plus a few random pages (for the demo)'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l write-first -d 'Bursts write only pages [0, N) of the region (0: all of it); the rest stays untouched' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l seed -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l log -d 'Write the ground-truth log (NDJSON) here' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l until-stdin -d 'Stop writing at the first byte on stdin, or its end (after --wait\'s byte, if any), as well as at --run-for: a test that needs writes until it has looked says when to stop'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l hold -d 'After the last burst, print `done` and wait for stdin to close before exiting'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -l quiet -d 'Print nothing on stdout (no `ready` line): the demo\'s writer shares the tracker\'s stdout'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand writer" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand scenario" -l steps -d 'Rounds of the scenario after the go byte' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand scenario" -l seed -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand scenario" -l gap -d 'Pause between rounds' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand scenario" -l log -d 'Write the ground-truth log (NDJSON) here' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand scenario" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand attach-helper" -l pid -d 'The target (its pidfd is fd 4)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand attach-helper" -l launched -d 'The target is a launched command waiting to exec: seize it first (on order)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand attach-helper" -s h -l help -d 'Print help'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "track" -d 'Track the dirty pages of a running process (--pid) or of a command it launches'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "compare" -d 'Run uffd-wp and soft-dirty tracking on the same target at once, and compare them'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "bench" -d 'Measure the harvest cost of every available method on the same workload (Markdown table)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "bench-target" -d 'The benchmark\'s target process (used by `bench`)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "demo" -d 'Launch a small built-in writer and track it live: see what the tool does in seconds'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "check" -d 'Report what this machine\'s kernel offers for dirty-page tracking, and what to fix'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "report" -d 'Render a recorded run (the output of `track --format json`) as a self-contained heatmap of time × address, with the write-rate curve and per-mapping totals'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "writer" -d 'A workload that writes pages in bursts and logs exactly which (used by the tests)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "scenario" -d 'Ground-truth scenarios of a changing address space (used by the tests)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "attach-helper" -d 'The attach helper (started by `track` itself: it borrows the target\'s thread)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track compare bench bench-target demo check report writer scenario attach-helper help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
