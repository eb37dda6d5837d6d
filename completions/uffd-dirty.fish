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
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "snapshot" -d 'Copy a running process\'s memory in rounds, as a live migration\'s pre-copy does, into a snapshot directory; then verify, materialize or describe it'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "compare" -d 'Run uffd-wp and soft-dirty tracking on the same target at once, and compare them'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "bench" -d 'Measure the harvest cost of every available method on the same workload (Markdown table)'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "demo" -d 'Launch a small built-in writer and track it live: see what the tool does in seconds'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "check" -d 'Report what this machine\'s kernel offers for dirty-page tracking, and what to fix'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "report" -d 'Render a recorded run (the output of `track --format json`) as a self-contained heatmap of time × address, with the write-rate curve and per-mapping totals'
complete -c uffd-dirty -n "__fish_uffd_dirty_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s p -l pid -d 'Process to attach to. It is never signalled, and it is left exactly as it was on exit' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s i -l interval -d 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s r -l range -d 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l mapping -d 'Follow only mappings this picks: a name as /proc/PID/maps shows it ([heap], /usr/lib/libc.so.6), a glob over the name or its last component (libfoo*, /dev/shm/*; the wildcards are * and ?), or kind:KIND (anon, heap, stack, file, shmem, hugetlb, or shared: any MAP_SHARED mapping, files mapped shared included). Repeatable: a mapping any of them picks is followed (within --range, if given)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s n -l count -d 'Stop after N intervals (at least 1)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s d -l duration -d 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s m -l method -d 'How dirty pages are found' -r -f -a "pagemap-scan\t'userfaultfd async write-protect, harvested by PAGEMAP_SCAN with atomic re-protect'
pagemap-read\t'The same arming, harvested by plain reads of /proc/PID/pagemap (bit 57 clear = written) and re-protected with UFFDIO_WRITEPROTECT'
soft-dirty\t'clear_refs soft-dirty (pagemap bit 55), no userfaultfd; the target is frozen while its bits are read and cleared (see --no-freeze). Needs CONFIG_MEM_SOFT_DIRTY'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s f -l format -d 'Output format' -r -f -a "human\t'One line per delta for people'
json\t'NDJSON: one JSON object per line, for scripts'
bitmap\t'`SEQ START END HEX` per tracked range per delta: the dirty-page bitmap, bit i = page START + i*page_size, least significant bit first in each byte'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s o -l output -d 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel\'s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory\'s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner\'s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l color -d 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set'
always\t'Always, even into a pipe or a file, and whatever NO_COLOR says'
never\t'Never'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l trigger -d 'Harvest when told instead of every --interval: stdin (one harvest per line read; tracking ends, reason input-closed, at the end of the input), or sigusr1 (one harvest per SIGUSR1). For a migration loop that harvests when it has sent the last round' -r -f -a "stdin\t'A line read on stdin'
sigusr1\t'A SIGUSR1'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s q -l quiet -d 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`\'s total row, and no notes on stderr (a forked child, a terminated command, the demo\'s introduction, `check`\'s verdict). Errors, and warnings about writes that go unreported, are always printed'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l json-bitmap -d 'Add each delta\'s dirty-page bitmap per tracked range to the JSON delta (`"bitmap"`)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l view -d 'Show a live picture of the tracked memory on the terminal instead of a stream. Each mapping (name and size in the left margin) is a block of rows of cells; every cell covers the same number of pages (in the header), so a mapping\'s rows are proportional to its size, with at least one row per mapping (a huge sparse reservation takes most of the screen: zoom into the others). A cell is brightest when written in the newest delta, then fades over 16 deltas (colours, or ░▒▓█ with NO_COLOR). Keys: j/k or arrows select a mapping, Enter/z zooms into it, Esc/u zooms out, ? explains, q or Ctrl-C stops (as SIGINT does). With --output FILE the records also go to FILE, as NDJSON (or --format bitmap). Needs a terminal on stdout'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l summary -d 'The end record also carries `written`: every page written since the attach, as ranges (the union of all deltas: "dirty since the checkpoint"). With --format bitmap, last lines `written START END HEX` mark those pages over every range tracked at some delta'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l no-freeze -d 'With --method soft-dirty, do not stop the target while its bits are read and cleared: no pause for it, but a write between the read and the clear is lost'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -l no-follow-exec -d 'End tracking (reason `exec`) when the target calls execve, instead of attaching to the new program and going on'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand track" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -s p -l pid -d 'The process to copy. Left running as it was (unless --leave-stopped)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -l dir -d 'A new or empty directory for the snapshot (created 0700: it holds the target\'s memory)' -r -f -a "(__fish_complete_directories)"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -s i -l interval -d 'Time from one pre-copy round\'s harvest to the next (a round that copies for longer is followed at once)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -l trigger -d 'Take a pre-copy round when told instead of every --interval: stdin (a round per line read; the end of the input goes on to the final round), or sigusr1 (a round per SIGUSR1). The caller then judges whether the rounds converge: they end at the threshold, --max-rounds or the end of the input, never as not converging' -r -f -a "stdin\t'A line read on stdin'
sigusr1\t'A SIGUSR1'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -l until-dirty-below -d 'Converged when a pre-copy round finds at most this many pages written: a count of pages, or a size (512K, 4MiB, 1G)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -l max-rounds -d 'At most this many pre-copy rounds after round 0 (then the final round, exit 3)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -l final -d 'What the final round does' -r -f -a "stop\t'Stop every thread of the target, harvest and copy once more, let it go'
none\t'No final round: the snapshot ends with its last pre-copy round, taken while the target ran (not a consistent image)'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -s r -l range -d 'Copy only START-END (as track --range). Repeatable' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -l mapping -d 'Copy only the mappings this picks (as track --mapping). Repeatable' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -s f -l format -d 'Output format of the per-round lines: a table, or NDJSON (`round` records, then `end`)' -r -f -a "human\t'Aligned text for people'
json\t'NDJSON: one JSON object per line, for scripts'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -l leave-stopped -d 'Leave the target stopped (SIGSTOP) at the end, for `snapshot verify` or a migrator that kills it once the copy is safe. `kill -CONT PID` resumes it'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -s q -l quiet -d 'No introduction on stderr'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -f -a "verify" -d 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -f -a "materialize" -d 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -f -a "info" -d 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and not __fish_seen_subcommand_from verify materialize info help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from verify" -l dir -d 'The snapshot directory' -r -f -a "(__fish_complete_directories)"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from verify" -s p -l pid -d 'The target, stopped' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from materialize" -l dir -d 'The snapshot directory' -r -f -a "(__fish_complete_directories)"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from materialize" -l round -d 'The round (default: the last complete one)' -r
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from materialize" -l out -d 'A new or empty directory to write to' -r -f -a "(__fish_complete_directories)"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from materialize" -s h -l help -d 'Print help'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from info" -l dir -d 'The snapshot directory' -r -f -a "(__fish_complete_directories)"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from info" -s f -l format -d 'Output format' -r -f -a "human\t'Aligned text for people'
json\t'NDJSON: one JSON object per line, for scripts'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from info" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from help" -f -a "materialize" -d 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from help" -f -a "info" -d 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand snapshot; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s p -l pid -d 'Process to attach to. It is never signalled, and it is left exactly as it was on exit' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s i -l interval -d 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s r -l range -d 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -l mapping -d 'Follow only mappings this picks: a name as /proc/PID/maps shows it ([heap], /usr/lib/libc.so.6), a glob over the name or its last component (libfoo*, /dev/shm/*; the wildcards are * and ?), or kind:KIND (anon, heap, stack, file, shmem, hugetlb, or shared: any MAP_SHARED mapping, files mapped shared included). Repeatable: a mapping any of them picks is followed (within --range, if given)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s n -l count -d 'Stop after N intervals (at least 1)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s d -l duration -d 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s f -l format -d 'Output format' -r -f -a "human\t'Aligned text for people'
json\t'NDJSON: one JSON object per line, for scripts'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s o -l output -d 'Write the output to FILE instead of stdout, by the rules of `track --output`' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -l color -d 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set'
always\t'Always, even into a pipe or a file, and whatever NO_COLOR says'
never\t'Never'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s q -l quiet -d 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`\'s total row, and no notes on stderr (a forked child, a terminated command, the demo\'s introduction, `check`\'s verdict). Errors, and warnings about writes that go unreported, are always printed'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand compare" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l sizes -d 'Tracked sizes, each optionally `@` the part populated (default all), e.g. `64M,1G,16G@1%`. A sparse case is populated in 2 MiB chunks spread over it' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l fractions -d 'Fractions of the populated pages dirtied before each harvest' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l rounds -d 'Harvests timed per case (the median is reported, with min and max); at least 1' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l slowdown-size -d 'Buffer size of the slowdown runs (all populated)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l slowdown-dirty -d 'Part of the slowdown buffer the target writes over and over' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l rates -d 'Harvest rates (per second) of the slowdown runs, 1 to 1000 (track\'s shortest --interval is 1ms)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l run-time -d 'How long each slowdown and footprint run lasts, from 1ms to 100y' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l snapshot-size -d 'Buffer of the snapshot section (all populated): its copy and final-round measurements use the whole, its convergence runs a quarter' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l snapshot-rates -d 'Page-writes per second of the snapshot section\'s convergence runs, one `uffd-dirty snapshot` each' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l pause-sizes -d 'Sizes of the pauses section, as --sizes' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l mapping-counts -d 'Mappings of the target in the mappings section (up to the kernel\'s vm.max_map_count, 65530 by default)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l redis-requests -d 'Requests of each redis-benchmark run in the redis section (SET, 256-byte values, 50 clients, over 300 k keys)' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l methods -d 'Methods to measure (default: every one this kernel supports)' -r -f -a "pagemap-scan\t'userfaultfd async write-protect, harvested by PAGEMAP_SCAN with atomic re-protect'
pagemap-read\t'The same arming, harvested by plain reads of /proc/PID/pagemap (bit 57 clear = written) and re-protected with UFFDIO_WRITEPROTECT'
soft-dirty\t'clear_refs soft-dirty (pagemap bit 55), no userfaultfd; the target is frozen while its bits are read and cleared (see --no-freeze). Needs CONFIG_MEM_SOFT_DIRTY'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l sections -d 'Which measurements to run (snapshot, pauses, mappings and redis only when asked for)' -r -f -a "harvest\t''
attach\t''
slowdown\t''
footprint\t''
snapshot\t''
pauses\t''
mappings\t''
redis\t''"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -l json -d 'Print JSON instead of Markdown tables'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s i -l interval -d 'Time between harvests, from 1ms to 100y' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s d -l duration -d 'How long the demo runs. Longer than 100 years: until stopped' -r -f
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -l log -d 'Also keep the writer\'s exact log of written pages here' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s f -l format -d 'Output format' -r -f -a "human\t'One line per delta for people'
json\t'NDJSON: one JSON object per line, for scripts'
bitmap\t'`SEQ START END HEX` per tracked range per delta: the dirty-page bitmap, bit i = page START + i*page_size, least significant bit first in each byte'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s o -l output -d 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel\'s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory\'s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner\'s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -l color -d 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set'
always\t'Always, even into a pipe or a file, and whatever NO_COLOR says'
never\t'Never'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s q -l quiet -d 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`\'s total row, and no notes on stderr (a forked child, a terminated command, the demo\'s introduction, `check`\'s verdict). Errors, and warnings about writes that go unreported, are always printed'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand check" -s f -l format -d 'Output format' -r -f -a "human\t'Aligned text for people'
json\t'NDJSON: one JSON object per line, for scripts'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand check" -s o -l output -d 'Write the output to FILE instead of stdout, by the rules of `track --output`' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand check" -l color -d 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never' -r -f -a "auto\t'On a terminal, unless NO_COLOR is set'
always\t'Always, even into a pipe or a file, and whatever NO_COLOR says'
never\t'Never'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand check" -s q -l quiet -d 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`\'s total row, and no notes on stderr (a forked child, a terminated command, the demo\'s introduction, `check`\'s verdict). Errors, and warnings about writes that go unreported, are always printed'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand report" -s o -l output -d 'Where to write the report, by the rules of `track --output` (a new file is created 0600; - or /dev/stdout: stdout). The extension picks the format: .html (the picture, the per-mapping table and a hover tooltip) or .svg (the picture alone); HTML on stdout' -r -F
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand report" -s f -l format -d 'The report\'s format, whatever -o\'s name says' -r -f -a "html\t'The picture, the per-mapping table and a hover tooltip'
svg\t'The picture alone'"
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track snapshot compare bench demo check report help" -f -a "track" -d 'Track the dirty pages of a running process (--pid) or of a command it launches'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track snapshot compare bench demo check report help" -f -a "snapshot" -d 'Copy a running process\'s memory in rounds, as a live migration\'s pre-copy does, into a snapshot directory; then verify, materialize or describe it'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track snapshot compare bench demo check report help" -f -a "compare" -d 'Run uffd-wp and soft-dirty tracking on the same target at once, and compare them'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track snapshot compare bench demo check report help" -f -a "bench" -d 'Measure the harvest cost of every available method on the same workload (Markdown table)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track snapshot compare bench demo check report help" -f -a "demo" -d 'Launch a small built-in writer and track it live: see what the tool does in seconds'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track snapshot compare bench demo check report help" -f -a "check" -d 'Report what this machine\'s kernel offers for dirty-page tracking, and what to fix'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track snapshot compare bench demo check report help" -f -a "report" -d 'Render a recorded run (the output of `track --format json`) as a self-contained heatmap of time × address, with the write-rate curve and per-mapping totals'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and not __fish_seen_subcommand_from track snapshot compare bench demo check report help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and __fish_seen_subcommand_from snapshot" -f -a "verify" -d 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and __fish_seen_subcommand_from snapshot" -f -a "materialize" -d 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names'
complete -c uffd-dirty -n "__fish_uffd_dirty_using_subcommand help; and __fish_seen_subcommand_from snapshot" -f -a "info" -d 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)'
