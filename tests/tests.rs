//! Integration tests: real kernel, real processes, ground truth. One binary, one module per area.

// Helpers: the writer, the tracker, and the page-for-page comparison.
#[allow(dead_code)]
mod common;
// Tracking a running process, held page for page against what it wrote.
mod ground_truth;
// What the target must not notice: blocking calls, sleeps, fds, tracer death.
mod target_safety;
// `track -- CMD`: launch mode and exit statuses.
mod launch;
// Writes no tracker can see (io_uring fixed buffers): announced at attach and while tracking.
mod blind;
// A target's exit told from an exec, by PID and in launch mode.
mod exits;
// Refusals: bad PIDs, bad ranges, traced targets; each a one-line error, the target untouched.
mod errors;
// man/ and completions/ against the clap definitions.
// The completion scripts run in bash, zsh and fish.
mod completions;
// Conventions users expect: words, --quiet, --color, one-line errors, docs held to the program.
mod conventions;
// A living address space: churn, mremap, zaps, THP, shared memory, brk, fork.
mod living;
// The cheap watch of the mappings between full listings: what it sees at once, what late.
mod watch;
// Stock Debian kernels under QEMU: soft-dirty and a kernel without async write-protect.
mod vm;
// Memory written while briefly writable: real dlopen() and ld.so's RELRO, against /proc/PID/mem.
mod relro;
// `uffd-dirty check` against this machine.
mod check;
// Output contracts: the schema, bitmaps, --output, exit codes.
mod output;
// `uffd-dirty bench`: a seconds-long smoke run.
mod bench;
// `track --view` in a real terminal (tmux), and the attach progress bar.
mod view;
// `uffd-dirty report`: a real run rendered and screenshotted in Chromium; its refusals.
mod report;
// The tracker SIGKILLed at every step of attach: the target must come out untouched.
mod kill_sweep;
// Hostile names (not UTF-8, terminal escapes): tracked, round-tripped, escaped everywhere.
mod names;
// Attaching under adverse conditions: busy threads, signal floods, exiting targets.
mod attach;

// `--mapping`: tracking picked by name, glob or kind.
mod selectors;
// The steady-state harvest allocates nothing (this binary counts allocations).
mod steady_state;
// The examples (precopy, wss) run against C children with known memory.
mod examples;
// The C API (feature `capi`): a C program links libuffd_dirty.so and tracks a child.
mod capi;
// Targets under seccomp: the filter suspended for the injected calls, or a clean refusal.
mod seccomp;
// Containers: targets in their own namespaces, and the tracker inside one.
mod namespaces;
// `track --trigger`: harvests on demand.
mod trigger;
// `snapshot`: rounds of a live process held against its memory, interrupted runs, refusals.
mod snapshot;
