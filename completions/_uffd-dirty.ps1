
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'uffd-dirty' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'uffd-dirty'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'uffd-dirty' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('track', 'track', [CompletionResultType]::ParameterValue, 'Track the dirty pages of a running process (--pid) or of a command it launches')
            [CompletionResult]::new('snapshot', 'snapshot', [CompletionResultType]::ParameterValue, 'Copy a running process''s memory in rounds, as a live migration''s pre-copy does, into a snapshot directory; then verify, materialize or describe it')
            [CompletionResult]::new('compare', 'compare', [CompletionResultType]::ParameterValue, 'Run uffd-wp and soft-dirty tracking on the same target at once, and compare them')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure the harvest cost of every available method on the same workload (Markdown table)')
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Launch a small built-in writer and track it live: see what the tool does in seconds')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Report what this machine''s kernel offers for dirty-page tracking, and what to fix')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Render a recorded run (the output of `track --format json`) as a self-contained heatmap of time × address, with the write-rate curve and per-mapping totals')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'uffd-dirty;track' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Process to attach to. It is never signalled, and it is left exactly as it was on exit')
            [CompletionResult]::new('--pid', '--pid', [CompletionResultType]::ParameterName, 'Process to attach to. It is never signalled, and it is left exactly as it was on exit')
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y')
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")')
            [CompletionResult]::new('--range', '--range', [CompletionResultType]::ParameterName, 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")')
            [CompletionResult]::new('--mapping', '--mapping', [CompletionResultType]::ParameterName, 'Follow only mappings this picks: a name as /proc/PID/maps shows it ([heap], /usr/lib/libc.so.6), a glob over the name or its last component (libfoo*, /dev/shm/*; the wildcards are * and ?), or kind:KIND (anon, heap, stack, file, shmem, hugetlb, or shared: any MAP_SHARED mapping, files mapped shared included). Repeatable: a mapping any of them picks is followed (within --range, if given)')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Stop after N intervals (at least 1)')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Stop after N intervals (at least 1)')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'How dirty pages are found')
            [CompletionResult]::new('--method', '--method', [CompletionResultType]::ParameterName, 'How dirty pages are found')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel''s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory''s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner''s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel''s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory''s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner''s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never')
            [CompletionResult]::new('--trigger', '--trigger', [CompletionResultType]::ParameterName, 'Harvest when told instead of every --interval: stdin (one harvest per line read; tracking ends, reason input-closed, at the end of the input), or sigusr1 (one harvest per SIGUSR1). For a migration loop that harvests when it has sent the last round')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed')
            [CompletionResult]::new('--json-bitmap', '--json-bitmap', [CompletionResultType]::ParameterName, 'Add each delta''s dirty-page bitmap per tracked range to the JSON delta (`"bitmap"`)')
            [CompletionResult]::new('--view', '--view', [CompletionResultType]::ParameterName, 'Show a live picture of the tracked memory on the terminal instead of a stream. Each mapping (name and size in the left margin) is a block of rows of cells; every cell covers the same number of pages (in the header), so a mapping''s rows are proportional to its size, with at least one row per mapping (a huge sparse reservation takes most of the screen: zoom into the others). A cell is brightest when written in the newest delta, then fades over 16 deltas (colours, or ░▒▓█ with NO_COLOR). Keys: j/k or arrows select a mapping, Enter/z zooms into it, Esc/u zooms out, ? explains, q or Ctrl-C stops (as SIGINT does). With --output FILE the records also go to FILE, as NDJSON (or --format bitmap). Needs a terminal on stdout')
            [CompletionResult]::new('--summary', '--summary', [CompletionResultType]::ParameterName, 'The end record also carries `written`: every page written since the attach, as ranges (the union of all deltas: "dirty since the checkpoint"). With --format bitmap, last lines `written START END HEX` mark those pages over every range tracked at some delta')
            [CompletionResult]::new('--no-freeze', '--no-freeze', [CompletionResultType]::ParameterName, 'With --method soft-dirty, do not stop the target while its bits are read and cleared: no pause for it, but a write between the read and the clear is lost')
            [CompletionResult]::new('--no-follow-exec', '--no-follow-exec', [CompletionResultType]::ParameterName, 'End tracking (reason `exec`) when the target calls execve, instead of attaching to the new program and going on')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'uffd-dirty;snapshot' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The process to copy. Left running as it was (unless --leave-stopped)')
            [CompletionResult]::new('--pid', '--pid', [CompletionResultType]::ParameterName, 'The process to copy. Left running as it was (unless --leave-stopped)')
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'A new or empty directory for the snapshot (created 0700: it holds the target''s memory)')
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Time from one pre-copy round''s harvest to the next (a round that copies for longer is followed at once)')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time from one pre-copy round''s harvest to the next (a round that copies for longer is followed at once)')
            [CompletionResult]::new('--trigger', '--trigger', [CompletionResultType]::ParameterName, 'Take a pre-copy round when told instead of every --interval: stdin (a round per line read; the end of the input goes on to the final round), or sigusr1 (a round per SIGUSR1). The caller then judges whether the rounds converge: they end at the threshold, --max-rounds or the end of the input, never as not converging')
            [CompletionResult]::new('--until-dirty-below', '--until-dirty-below', [CompletionResultType]::ParameterName, 'Converged when a pre-copy round finds at most this many pages written: a count of pages, or a size (512K, 4MiB, 1G)')
            [CompletionResult]::new('--max-rounds', '--max-rounds', [CompletionResultType]::ParameterName, 'At most this many pre-copy rounds after round 0 (then the final round, exit 3)')
            [CompletionResult]::new('--final', '--final', [CompletionResultType]::ParameterName, 'What the final round does')
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Copy only START-END (as track --range). Repeatable')
            [CompletionResult]::new('--range', '--range', [CompletionResultType]::ParameterName, 'Copy only START-END (as track --range). Repeatable')
            [CompletionResult]::new('--mapping', '--mapping', [CompletionResultType]::ParameterName, 'Copy only the mappings this picks (as track --mapping). Repeatable')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Output format of the per-round lines: a table, or NDJSON (`round` records, then `end`)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format of the per-round lines: a table, or NDJSON (`round` records, then `end`)')
            [CompletionResult]::new('--leave-stopped', '--leave-stopped', [CompletionResultType]::ParameterName, 'Leave the target stopped (SIGSTOP) at the end, for `snapshot verify` or a migrator that kills it once the copy is safe. `kill -CONT PID` resumes it')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No introduction on stderr')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No introduction on stderr')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does')
            [CompletionResult]::new('materialize', 'materialize', [CompletionResultType]::ParameterValue, 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'uffd-dirty;snapshot;verify' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'The snapshot directory')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'The target, stopped')
            [CompletionResult]::new('--pid', '--pid', [CompletionResultType]::ParameterName, 'The target, stopped')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'uffd-dirty;snapshot;materialize' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'The snapshot directory')
            [CompletionResult]::new('--round', '--round', [CompletionResultType]::ParameterName, 'The round (default: the last complete one)')
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'A new or empty directory to write to')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'uffd-dirty;snapshot;info' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'The snapshot directory')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'uffd-dirty;snapshot;help' {
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does')
            [CompletionResult]::new('materialize', 'materialize', [CompletionResultType]::ParameterValue, 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'uffd-dirty;snapshot;help;verify' {
            break
        }
        'uffd-dirty;snapshot;help;materialize' {
            break
        }
        'uffd-dirty;snapshot;help;info' {
            break
        }
        'uffd-dirty;snapshot;help;help' {
            break
        }
        'uffd-dirty;compare' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Process to attach to. It is never signalled, and it is left exactly as it was on exit')
            [CompletionResult]::new('--pid', '--pid', [CompletionResultType]::ParameterName, 'Process to attach to. It is never signalled, and it is left exactly as it was on exit')
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between harvests (e.g. 100ms, 1s, 2m), from 1ms to 100y')
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")')
            [CompletionResult]::new('--range', '--range', [CompletionResultType]::ParameterName, 'Follow only START-END (hex with 0x, or decimal; END exclusive; page-aligned). Repeatable. Default: every mapping that can ever be written (see the README, "What is tracked")')
            [CompletionResult]::new('--mapping', '--mapping', [CompletionResultType]::ParameterName, 'Follow only mappings this picks: a name as /proc/PID/maps shows it ([heap], /usr/lib/libc.so.6), a glob over the name or its last component (libfoo*, /dev/shm/*; the wildcards are * and ?), or kind:KIND (anon, heap, stack, file, shmem, hugetlb, or shared: any MAP_SHARED mapping, files mapped shared included). Repeatable: a mapping any of them picks is followed (within --range, if given)')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Stop after N intervals (at least 1)')
            [CompletionResult]::new('--count', '--count', [CompletionResultType]::ParameterName, 'Stop after N intervals (at least 1)')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Stop after this long (e.g. 10s). Longer than 100 years: until stopped')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the output to FILE instead of stdout, by the rules of `track --output`')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the output to FILE instead of stdout, by the rules of `track --output`')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'uffd-dirty;bench' {
            [CompletionResult]::new('--sizes', '--sizes', [CompletionResultType]::ParameterName, 'Tracked sizes, each optionally `@` the part populated (default all), e.g. `64M,1G,16G@1%`. A sparse case is populated in 2 MiB chunks spread over it')
            [CompletionResult]::new('--fractions', '--fractions', [CompletionResultType]::ParameterName, 'Fractions of the populated pages dirtied before each harvest')
            [CompletionResult]::new('--rounds', '--rounds', [CompletionResultType]::ParameterName, 'Harvests timed per case (the median is reported, with min and max); at least 1')
            [CompletionResult]::new('--slowdown-size', '--slowdown-size', [CompletionResultType]::ParameterName, 'Buffer size of the slowdown runs (all populated)')
            [CompletionResult]::new('--slowdown-dirty', '--slowdown-dirty', [CompletionResultType]::ParameterName, 'Part of the slowdown buffer the target writes over and over')
            [CompletionResult]::new('--rates', '--rates', [CompletionResultType]::ParameterName, 'Harvest rates (per second) of the slowdown runs, 1 to 1000 (track''s shortest --interval is 1ms)')
            [CompletionResult]::new('--run-time', '--run-time', [CompletionResultType]::ParameterName, 'How long each slowdown and footprint run lasts, from 1ms to 100y')
            [CompletionResult]::new('--snapshot-size', '--snapshot-size', [CompletionResultType]::ParameterName, 'Buffer of the snapshot section (all populated): its copy and final-round measurements use the whole, its convergence runs a quarter')
            [CompletionResult]::new('--snapshot-rates', '--snapshot-rates', [CompletionResultType]::ParameterName, 'Page-writes per second of the snapshot section''s convergence runs, one `uffd-dirty snapshot` each')
            [CompletionResult]::new('--pause-sizes', '--pause-sizes', [CompletionResultType]::ParameterName, 'Sizes of the pauses section, as --sizes')
            [CompletionResult]::new('--mapping-counts', '--mapping-counts', [CompletionResultType]::ParameterName, 'Mappings of the target in the mappings section (up to the kernel''s vm.max_map_count, 65530 by default)')
            [CompletionResult]::new('--redis-requests', '--redis-requests', [CompletionResultType]::ParameterName, 'Requests of each redis-benchmark run in the redis section (SET, 256-byte values, 50 clients, over 300 k keys)')
            [CompletionResult]::new('--methods', '--methods', [CompletionResultType]::ParameterName, 'Methods to measure (default: every one this kernel supports)')
            [CompletionResult]::new('--sections', '--sections', [CompletionResultType]::ParameterName, 'Which measurements to run (snapshot, pauses, mappings and redis only when asked for)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of Markdown tables')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'uffd-dirty;demo' {
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Time between harvests, from 1ms to 100y')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between harvests, from 1ms to 100y')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'How long the demo runs. Longer than 100 years: until stopped')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'How long the demo runs. Longer than 100 years: until stopped')
            [CompletionResult]::new('--log', '--log', [CompletionResultType]::ParameterName, 'Also keep the writer''s exact log of written pages here')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel''s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory''s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner''s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the output to FILE instead of stdout. A new file is created 0600; an existing one is truncated (and, if yours, made private: group and other permissions removed). As the kernel''s fs.protected_* rules do, whatever the sysctls say: in a sticky directory others can write (/tmp), a file owned neither by you nor by the directory''s owner is refused, and a symbolic link there is not followed unless it is yours or the directory owner''s; FILE itself is never a symbolic link. A FIFO waits for its reader (SIGINT or SIGTERM ends the wait, exit 0). - , /dev/stdout, /dev/stderr and /proc/self/fd/N write to that fd of ours')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'uffd-dirty;check' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the output to FILE instead of stdout, by the rules of `track --output`')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the output to FILE instead of stdout, by the rules of `track --output`')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to colour output for people: auto (on a terminal, unless NO_COLOR is set), always (even into a pipe), never')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Print less for people: no per-mapping table at the end of `track`, no list of skipped mappings, no closing note under `compare`''s total row, and no notes on stderr (a forked child, a terminated command, the demo''s introduction, `check`''s verdict). Errors, and warnings about writes that go unreported, are always printed')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'uffd-dirty;report' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Where to write the report, by the rules of `track --output` (a new file is created 0600; - or /dev/stdout: stdout). The extension picks the format: .html (the picture, the per-mapping table and a hover tooltip) or .svg (the picture alone); HTML on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Where to write the report, by the rules of `track --output` (a new file is created 0600; - or /dev/stdout: stdout). The extension picks the format: .html (the picture, the per-mapping table and a hover tooltip) or .svg (the picture alone); HTML on stdout')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'The report''s format, whatever -o''s name says')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'The report''s format, whatever -o''s name says')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'uffd-dirty;help' {
            [CompletionResult]::new('track', 'track', [CompletionResultType]::ParameterValue, 'Track the dirty pages of a running process (--pid) or of a command it launches')
            [CompletionResult]::new('snapshot', 'snapshot', [CompletionResultType]::ParameterValue, 'Copy a running process''s memory in rounds, as a live migration''s pre-copy does, into a snapshot directory; then verify, materialize or describe it')
            [CompletionResult]::new('compare', 'compare', [CompletionResultType]::ParameterValue, 'Run uffd-wp and soft-dirty tracking on the same target at once, and compare them')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Measure the harvest cost of every available method on the same workload (Markdown table)')
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Launch a small built-in writer and track it live: see what the tool does in seconds')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Report what this machine''s kernel offers for dirty-page tracking, and what to fix')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Render a recorded run (the output of `track --format json`) as a self-contained heatmap of time × address, with the write-rate curve and per-mapping totals')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'uffd-dirty;help;track' {
            break
        }
        'uffd-dirty;help;snapshot' {
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Compare the last round with the memory of the target, which must be stopped (take the snapshot with --leave-stopped): every page, with the address and mapping of any that differs. Exit status 1 if one does')
            [CompletionResult]::new('materialize', 'materialize', [CompletionResultType]::ParameterValue, 'Write the memory as of a round to a directory: a file per mapping (its exact size, pages never written as holes, in mem/START-END.bin) and mappings.json listing them with their addresses, permissions, offsets, kinds and names')
            [CompletionResult]::new('info', 'info', [CompletionResultType]::ParameterValue, 'Describe a snapshot: its rounds, their sizes, how it ended, rounds cut short, and whether every file matches its checksum (exit status 1 if not)')
            break
        }
        'uffd-dirty;help;snapshot;verify' {
            break
        }
        'uffd-dirty;help;snapshot;materialize' {
            break
        }
        'uffd-dirty;help;snapshot;info' {
            break
        }
        'uffd-dirty;help;compare' {
            break
        }
        'uffd-dirty;help;bench' {
            break
        }
        'uffd-dirty;help;demo' {
            break
        }
        'uffd-dirty;help;check' {
            break
        }
        'uffd-dirty;help;report' {
            break
        }
        'uffd-dirty;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
