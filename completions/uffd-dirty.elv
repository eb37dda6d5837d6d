
use builtin;
use str;

set edit:completion:arg-completer[uffd-dirty] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'uffd-dirty'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'uffd-dirty'= {
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand track 'Track the dirty pages of a running process (--pid) or of a command it launches'
            cand snapshot 'Copy a running process''s memory in rounds, as a live migration''s pre-copy does, into a snapshot directory; then verify, materialize or describe it'
            cand compare 'Run uffd-wp and soft-dirty tracking on the same target at once, and compare them'
            cand bench 'Measure the harvest cost of every available method on the same workload (Markdown table)'
            cand demo 'Launch a small built-in writer and track it live: see what the tool does in seconds'
            cand check 'Report what this machine''s kernel offers for dirty-page tracking, and what to fix'
            cand report 'Render a recorded run (the output of `track --format json`) as a self-contained heatmap of time × address, with the write-rate curve and per-mapping totals'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'uffd-dirty;track'= {
            cand -p 'Process to attach to. It is never signalled, and it is left exactly as it was on exit'
            cand --pid 'Process to attach to. It is never signalled, and it is left exactly as it was on exit'
            cand -i 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y'
            cand --interval 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y'
            cand -r 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")'
            cand --range 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")'
            cand --mapping 'Follow only mappings this picks: a name as /proc/PID/maps shows it ([heap], /usr/lib/libc.so.6), a glob over the name or its last component (libfoo*, /dev/shm/*; the wildcards are * and ?), or kind:KIND (anon, heap, stack, file, shmem, hugetlb, or shared: any MAP_SHARED mapping, files mapped shared included). Repeatable: a mapping any of them picks is followed (within --range, if given)'
            cand -n 'Stop after N intervals (at least 1)'
            cand --count 'Stop after N intervals (at least 1)'
            cand -d 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped'
            cand --duration 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped'
            cand -m 'How dirty pages are found'
            cand --method 'How dirty pages are found'
            cand -f 'Output format'
            cand --format 'Output format'
            cand -o 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel''s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory''s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner''s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours'
            cand --output 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel''s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory''s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner''s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours'
            cand --color 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never'
            cand --trigger 'Harvest when told instead of every --interval: stdin (one harvest per line read; tracking ends, reason input-closed, at the end of the input), or sigusr1 (one harvest per SIGUSR1). For a migration loop that harvests when it has sent the last round'
            cand -q 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed'
            cand --quiet 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed'
            cand --json-bitmap 'Add each delta''s dirty-page bitmap per tracked range to the JSON delta (`"bitmap"`)'
            cand --view 'Show a live picture of the tracked memory on the terminal instead of a stream. Each mapping (name and size in the left margin) is a block of rows of cells; every cell covers the same number of pages (in the header), so a mapping''s rows are proportional to its size, with at least one row per mapping (a huge sparse reservation takes most of the screen: zoom into the others). A cell is brightest when written in the newest delta, then fades over 16 deltas (colours, or ░▒▓█ with NO_COLOR). Keys: j/k or arrows select a mapping, Enter/z zooms into it, Esc/u zooms out, ? explains, q or Ctrl-C stops (as SIGINT does). With --output FILE the records also go to FILE, as NDJSON (or --format bitmap). Needs a terminal on stdout'
            cand --summary 'The end record also carries `written`: every page written since the attach, as ranges (the union of all deltas: "dirty since the checkpoint"). With --format bitmap, last lines `written START END HEX` mark those pages over every range tracked at some delta'
            cand --no-freeze 'With --method soft-dirty, do not stop the target while its bits are read and cleared: no pause for it, but a write between the read and the clear is lost'
            cand --no-follow-exec 'End tracking (reason `exec`) when the target calls execve, instead of attaching to the new program and going on'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'uffd-dirty;snapshot'= {
            cand -p 'The process to copy. Left running as it was (unless --leave-stopped)'
            cand --pid 'The process to copy. Left running as it was (unless --leave-stopped)'
            cand --dir 'A new or empty directory for the snapshot (created 0700: it holds the target''s memory)'
            cand -i 'Time from one pre-copy round''s harvest to the next (a round that copies for longer is followed at once)'
            cand --interval 'Time from one pre-copy round''s harvest to the next (a round that copies for longer is followed at once)'
            cand --trigger 'Take a pre-copy round when told instead of every --interval: stdin (a round per line read; the end of the input goes on to the final round), or sigusr1 (a round per SIGUSR1). The caller then judges whether the rounds converge: they end at the threshold, --max-rounds or the end of the input, never as not converging'
            cand --until-dirty-below 'Converged when a pre-copy round finds at most this many pages written: a count of pages, or a size (512K, 4MiB, 1G)'
            cand --max-rounds 'At most this many pre-copy rounds after round 0 (then the final round, exit 3)'
            cand --final 'What the final round does'
            cand -r 'Copy only START-END (as track --range). Repeatable'
            cand --range 'Copy only START-END (as track --range). Repeatable'
            cand --mapping 'Copy only the mappings this picks (as track --mapping). Repeatable'
            cand -f 'Output format of the per-round lines: a table, or NDJSON (`round` records, then `end`)'
            cand --format 'Output format of the per-round lines: a table, or NDJSON (`round` records, then `end`)'
            cand --leave-stopped 'Leave the target stopped (SIGSTOP) at the end, for `snapshot verify` or a migrator that kills it once the copy is safe. `kill -CONT PID` resumes it'
            cand -q 'No introduction on stderr'
            cand --quiet 'No introduction on stderr'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand verify 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does'
            cand materialize 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names'
            cand info 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'uffd-dirty;snapshot;verify'= {
            cand --dir 'The snapshot directory'
            cand -p 'The target, stopped'
            cand --pid 'The target, stopped'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'uffd-dirty;snapshot;materialize'= {
            cand --dir 'The snapshot directory'
            cand --round 'The round (default: the last complete one)'
            cand --out 'A new or empty directory to write to'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'uffd-dirty;snapshot;info'= {
            cand --dir 'The snapshot directory'
            cand -f 'Output format'
            cand --format 'Output format'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'uffd-dirty;snapshot;help'= {
            cand verify 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does'
            cand materialize 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names'
            cand info 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'uffd-dirty;snapshot;help;verify'= {
        }
        &'uffd-dirty;snapshot;help;materialize'= {
        }
        &'uffd-dirty;snapshot;help;info'= {
        }
        &'uffd-dirty;snapshot;help;help'= {
        }
        &'uffd-dirty;compare'= {
            cand -p 'Process to attach to. It is never signalled, and it is left exactly as it was on exit'
            cand --pid 'Process to attach to. It is never signalled, and it is left exactly as it was on exit'
            cand -i 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y'
            cand --interval 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y'
            cand -r 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")'
            cand --range 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")'
            cand --mapping 'Follow only mappings this picks: a name as /proc/PID/maps shows it ([heap], /usr/lib/libc.so.6), a glob over the name or its last component (libfoo*, /dev/shm/*; the wildcards are * and ?), or kind:KIND (anon, heap, stack, file, shmem, hugetlb, or shared: any MAP_SHARED mapping, files mapped shared included). Repeatable: a mapping any of them picks is followed (within --range, if given)'
            cand -n 'Stop after N intervals (at least 1)'
            cand --count 'Stop after N intervals (at least 1)'
            cand -d 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped'
            cand --duration 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped'
            cand -f 'Output format'
            cand --format 'Output format'
            cand -o 'Write the output to FILE instead of stdout, by the rules of `track --output`'
            cand --output 'Write the output to FILE instead of stdout, by the rules of `track --output`'
            cand --color 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never'
            cand -q 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed'
            cand --quiet 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'uffd-dirty;bench'= {
            cand --sizes 'Tracked sizes, each optionally `@` the part populated (default all), e.g. `64M,1G,16G@1%`. A sparse case is populated in 2 MiB chunks spread over it'
            cand --fractions 'Fractions of the populated pages dirtied before each harvest'
            cand --rounds 'Harvests timed per case (the median is reported, with min and max); at least 1'
            cand --slowdown-size 'Buffer size of the slowdown runs (all populated)'
            cand --slowdown-dirty 'Part of the slowdown buffer the target writes over and over'
            cand --rates 'Harvest rates (per second) of the slowdown runs, 1 to 1000 (track''s shortest --interval is 1ms)'
            cand --run-time 'How long each slowdown and footprint run lasts, from 1ms to 100y'
            cand --snapshot-size 'Buffer of the snapshot section (all populated): its copy and final-round measurements use the whole, its convergence runs a quarter'
            cand --snapshot-rates 'Page-writes per second of the snapshot section''s convergence runs, one `uffd-dirty snapshot` each'
            cand --pause-sizes 'Sizes of the pauses section, as --sizes'
            cand --mapping-counts 'Mappings of the target in the mappings section (up to the kernel''s vm.max_map_count, 65530 by default)'
            cand --redis-requests 'Requests of each redis-benchmark run in the redis section (SET, 256-byte values, 50 clients, over 300 k keys)'
            cand --methods 'Methods to measure (default: every one this kernel supports)'
            cand --sections 'Which measurements to run (snapshot, pauses, mappings and redis only when asked for)'
            cand --json 'Print JSON instead of Markdown tables'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'uffd-dirty;demo'= {
            cand -i 'Time between harvests, from 1ms to 100y'
            cand --interval 'Time between harvests, from 1ms to 100y'
            cand -d 'How long the demo runs. Longer than 100 years: until stopped'
            cand --duration 'How long the demo runs. Longer than 100 years: until stopped'
            cand --log 'Also keep the writer''s exact log of written pages here'
            cand -f 'Output format'
            cand --format 'Output format'
            cand -o 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel''s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory''s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner''s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours'
            cand --output 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel''s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory''s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner''s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours'
            cand --color 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never'
            cand -q 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed'
            cand --quiet 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'uffd-dirty;check'= {
            cand -f 'Output format'
            cand --format 'Output format'
            cand -o 'Write the output to FILE instead of stdout, by the rules of `track --output`'
            cand --output 'Write the output to FILE instead of stdout, by the rules of `track --output`'
            cand --color 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never'
            cand -q 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed'
            cand --quiet 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'uffd-dirty;report'= {
            cand -o 'Where to write the report, by the rules of `track --output` (a new file is created 0600; - or /dev/stdout: stdout). The extension picks the format: .html (the picture, the per-mapping table and a hover tooltip) or .svg (the picture alone); HTML on stdout'
            cand --output 'Where to write the report, by the rules of `track --output` (a new file is created 0600; - or /dev/stdout: stdout). The extension picks the format: .html (the picture, the per-mapping table and a hover tooltip) or .svg (the picture alone); HTML on stdout'
            cand -f 'The report''s format, whatever -o''s name says'
            cand --format 'The report''s format, whatever -o''s name says'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'uffd-dirty;help'= {
            cand track 'Track the dirty pages of a running process (--pid) or of a command it launches'
            cand snapshot 'Copy a running process''s memory in rounds, as a live migration''s pre-copy does, into a snapshot directory; then verify, materialize or describe it'
            cand compare 'Run uffd-wp and soft-dirty tracking on the same target at once, and compare them'
            cand bench 'Measure the harvest cost of every available method on the same workload (Markdown table)'
            cand demo 'Launch a small built-in writer and track it live: see what the tool does in seconds'
            cand check 'Report what this machine''s kernel offers for dirty-page tracking, and what to fix'
            cand report 'Render a recorded run (the output of `track --format json`) as a self-contained heatmap of time × address, with the write-rate curve and per-mapping totals'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'uffd-dirty;help;track'= {
        }
        &'uffd-dirty;help;snapshot'= {
            cand verify 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does'
            cand materialize 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names'
            cand info 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)'
        }
        &'uffd-dirty;help;snapshot;verify'= {
        }
        &'uffd-dirty;help;snapshot;materialize'= {
        }
        &'uffd-dirty;help;snapshot;info'= {
        }
        &'uffd-dirty;help;compare'= {
        }
        &'uffd-dirty;help;bench'= {
        }
        &'uffd-dirty;help;demo'= {
        }
        &'uffd-dirty;help;check'= {
        }
        &'uffd-dirty;help;report'= {
        }
        &'uffd-dirty;help;help'= {
        }
    ]
    $completions[$command]
}
