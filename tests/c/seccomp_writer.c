/*
 * A writer under seccomp, with ground truth: maps PAGES pages, writes the tracker's `wait`
 * record to LOG, prints "ready", installs the filter MODE, waits for a byte on stdin, then
 * writes BURSTS bursts of pages, logging each burst (pages and CLOCK_REALTIME instants) as the
 * `uffd-dirty writer` does, so that the tests compare the tracker's deltas with it.
 *
 *   seccomp_writer MODE LOG PAGES BURSTS
 *
 * MODE: none; nodump (no filter, but not dumpable, as a setuid program); allow (a filter
 * allowing everything); eperm (userfaultfd fails with EPERM, as
 * Docker's default profile does); kill (default SECCOMP_RET_KILL_PROCESS, and only the calls
 * this program makes allowed: not userfaultfd, close, ioctl or clone); in eperm mode, once
 * tracked, the program's own userfaultfd() must still fail (exit 7 otherwise); strict
 * (SECCOMP_MODE_STRICT: read, write, exit, sigreturn only; no clock either, so its bursts are
 * logged at time 0). Exits 0 after the last burst.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts); /* the vDSO: no system call */
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
		  BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static int install(const char *mode)
{
	if (!strcmp(mode, "none"))
		return 0;
	/* Not a filter: not dumpable (as a setuid program is), so only CAP_SYS_PTRACE traces it. */
	if (!strcmp(mode, "nodump"))
		return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	if (!strcmp(mode, "strict"))
		return prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT);
	struct sock_filter allow_all[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_filter eperm[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_filter kill[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		ALLOW(SYS_read),
		ALLOW(SYS_write),
		ALLOW(SYS_nanosleep),
		ALLOW(SYS_clock_nanosleep),
		ALLOW(SYS_clock_gettime),
		ALLOW(SYS_restart_syscall),
		ALLOW(SYS_rt_sigreturn),
		ALLOW(SYS_exit),
		ALLOW(SYS_exit_group),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	};
	struct sock_fprog prog;
	if (!strcmp(mode, "allow"))
		prog = (struct sock_fprog){ 1, allow_all };
	else if (!strcmp(mode, "eperm"))
		prog = (struct sock_fprog){ sizeof eperm / sizeof eperm[0], eperm };
	else if (!strcmp(mode, "kill"))
		prog = (struct sock_fprog){ sizeof kill / sizeof kill[0], kill };
	else
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -1;
	return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* Write all of `s` to `fd` (the log and stdout are all the program writes to). */
static void say(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w <= 0)
			syscall(SYS_exit, 5);
		s += w;
		n -= (size_t)w;
	}
}

/* Wait about `ms` milliseconds: nanosleep, or (strict mode, which allows no sleep, and no
 * clock: it disables the TSC the vDSO reads) spinning. */
static void pause_ms(int strict, long ms)
{
	if (!strict) {
		struct timespec t = { 0, ms * 1000000L };
		nanosleep(&t, NULL);
		return;
	}
	for (volatile long i = 0; i < ms * 3000000L; i++)
		;
}

/* The time for the log; 0 in strict mode (no clock there: the test then checks that every
 * page written is reported, not when). */
static uint64_t stamp(int strict)
{
	return strict ? 0 : now_ns(CLOCK_REALTIME);
}

int main(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	const char *mode = argv[1];
	int strict = !strcmp(mode, "strict");
	size_t pages = (size_t)atol(argv[3]);
	int bursts = atoi(argv[4]);
	char *region = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	FILE *log = fopen(argv[2], "w");
	if (region == MAP_FAILED || !log)
		return 3;
	int logfd = fileno(log);
	char line[65536];
	int n = snprintf(line, sizeof line, "{\"type\":\"wait\",\"base\":\"%p\",\"pages\":%zu}\n",
			 (void *)region, pages);
	say(logfd, line, (size_t)n);
	if (install(mode) != 0)
		return 4;
	say(1, "ready\n", 6);
	char go;
	if (read(0, &go, 1) != 1)
		syscall(SYS_exit, 6);
	/* The filter applies again once a tracker gave this thread back: a call of its own to
	 * userfaultfd() must still be refused (exit 7 if it is not). */
	if (!strcmp(mode, "eperm")) {
		long fd = syscall(SYS_userfaultfd, 0);
		if (fd >= 0 || errno != EPERM)
			syscall(SYS_exit, 7);
	}
	uint64_t seed = 0x9e3779b97f4a7c15u;
	for (int b = 0; b < bursts; b++) {
		uint64_t start = stamp(strict);
		n = snprintf(line, sizeof line, "{\"type\":\"burst\",\"start_ns\":%lu,\"pages\":[",
			     (unsigned long)start);
		for (int k = 0; k < 8; k++) {
			seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
			size_t p = seed % pages;
			((volatile uint64_t *)(region + p * PAGE))[k] = seed;
			n += snprintf(line + n, sizeof line - (size_t)n, "%s%zu", k ? "," : "", p);
		}
		uint64_t end = stamp(strict);
		n += snprintf(line + n, sizeof line - (size_t)n, "],\"end_ns\":%lu}\n",
			      (unsigned long)end);
		say(logfd, line, (size_t)n);
		pause_ms(strict, 5);
	}
	/* Linger: the tracker's next harvests see the last bursts before the memory goes. */
	pause_ms(strict, 200);
	syscall(SYS_exit, 0); /* exit, not exit_group: strict mode allows only the former */
	return 0;
}
