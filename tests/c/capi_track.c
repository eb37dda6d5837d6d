/*
 * The C API against ground truth (tests/capi.rs builds and runs this, linked to
 * libuffd_dirty.so, with UFFD_DIRTY_ATTACH_HELPER naming the uffd-dirty binary).
 *
 * For each method: fork a child that writes, on command, a set of pages of its own memory
 * that it chooses and reports back page by page; attach to the child by PID with a range
 * option; after every round, harvest and hold the reported pages against the written ones:
 * every written page must be reported (no lost write), and every reported page that was not
 * written counts as a false positive. Pages just outside the range are written every round
 * and must never be reported. uffd_dirty_read_pages() is checked against the values written.
 * Then the error paths: bad PIDs, bad options, NULLs, a harvest after the child exited; and
 * launched commands: an exit status, an exec followed, an exec not followed.
 *
 * Prints one line per method ("method=NAME rounds=.. written=.. reported=.. lost=..
 * false_positives=.. out_of_range=..") and "capi_track: N checks passed"; exits 1 on the first
 * failed check, and 77 (printing the reason) where this kernel cannot track at all.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "uffd_dirty.h"

#define PAGES 1024u
#define ROUNDS 12u
#define STOP UINT32_MAX

static size_t page;
static unsigned checks;

static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "capi_track: FAIL: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	exit(1);
}

#define CHECK(cond, ...)                  \
	do {                              \
		if (!(cond))              \
			fail(__VA_ARGS__); \
		checks++;                 \
	} while (0)

/* A call failed as expected: `ret` is its negated kind (int calls) or 0 (handle calls, which
 * returned NULL); the thread's last error must have `kind` and a message. */
static void expect_error(const char *what, int ret, int kind)
{
	const char *msg = uffd_dirty_last_error();
	int last = uffd_dirty_last_error_kind();
	if (ret != 0)
		CHECK(ret == -kind, "%s: returned %d (%s), expected -%d (%s): %s", what, ret,
		      uffd_dirty_strerror(ret), kind, uffd_dirty_strerror(kind), msg);
	CHECK(last == kind, "%s: last error kind %d (%s), expected %d (%s): %s", what, last,
	      uffd_dirty_strerror(last), kind, uffd_dirty_strerror(kind), msg);
	CHECK(msg && strlen(msg) > 0 && !strchr(msg, '\n'), "%s: no one-line message", what);
	printf("error %s: %s: %s\n", what, uffd_dirty_strerror(kind), msg);
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(111);
		p += n;
		len -= (size_t)n;
	}
}

static int read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	while (len) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static uint64_t pattern(uint32_t round, uint32_t i)
{
	return 0x5546464400000000ull | ((uint64_t)round << 16) | i;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * The child: `region` is PAGES + 2 pages; pages 1..PAGES are tracked, 0 and PAGES + 1 lie
 * just outside the range. Each command is a round number; the child writes that round's
 * pages (and the two outside ones), then reports the indices it wrote. Only
 * async-signal-safe calls: it is forked from a process that holds the library.
 */
static void child(int cmd, int ack, char *region)
{
	static uint32_t list[PAGES];
	for (;;) {
		uint32_t round, n = 0;
		if (read_all(cmd, &round, sizeof round) || round == STOP)
			_exit(0);
		uint64_t seed = 0x9e3779b97f4a7c15ull ^ ((uint64_t)round * 0x2545f4914f6cdd1dull);
		for (uint32_t i = 0; i < PAGES; i++) {
			int w;
			switch (round) {
			case 0: /* idle */
				w = 0;
				break;
			case 1: /* everything */
				w = 1;
				break;
			case 2: /* one run */
				w = i >= 100 && i < 300;
				break;
			case 3: /* every other page: no two written pages touch */
				w = i % 2 == 1;
				break;
			default: /* about one page in 16, at random */
				w = xorshift(&seed) % 16 == 0;
			}
			if (!w)
				continue;
			volatile uint64_t *p = (volatile uint64_t *)(region + (size_t)(i + 1) * page);
			p[0] = pattern(round, i);
			p[page / 8 - 1] = pattern(round, i);
			list[n++] = i;
		}
		*(volatile char *)region = (char)round;
		*(volatile char *)(region + (size_t)(PAGES + 1) * page) = (char)round;
		write_all(ack, &n, sizeof n);
		write_all(ack, list, n * sizeof list[0]);
	}
}

struct kid {
	pid_t pid;
	int cmd, ack;
};

static struct kid fork_child(char *region)
{
	int cmd[2], ack[2];
	if (pipe(cmd) || pipe(ack))
		fail("pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (pid == 0) {
		close(cmd[1]);
		close(ack[0]);
		child(cmd[0], ack[1], region);
	}
	close(cmd[0]);
	close(ack[1]);
	return (struct kid){ pid, cmd[1], ack[0] };
}

static void reap(pid_t pid)
{
	int status;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
}

static const char *method_name(int m)
{
	switch (m) {
	case UFFD_DIRTY_METHOD_PAGEMAP_SCAN:
		return "pagemap-scan";
	case UFFD_DIRTY_METHOD_PAGEMAP_READ:
		return "pagemap-read";
	case UFFD_DIRTY_METHOD_SOFT_DIRTY:
		return "soft-dirty";
	}
	return "?";
}

/* The written pages' contents through uffd_dirty_read_pages(): two written pages, with an
 * unmapped page before them (zeros, reported unreadable); then its refusals. */
static void check_read_pages(struct uffd_dirty_tracker *tr, uint64_t base, uint32_t round,
			     const uint32_t *list, uint32_t n)
{
	uint32_t a = list[0], b = list[n - 1];
	struct uffd_dirty_span spans[3] = {
		{ 0, page }, /* address 0: never mapped */
		{ base + (uint64_t)a * page, base + (uint64_t)(a + 1) * page },
		{ base + (uint64_t)b * page, base + (uint64_t)(b + 1) * page },
	};
	char *buf = malloc(3 * page);
	memset(buf, 0xa5, 3 * page);
	struct uffd_dirty_span unreadable[2];
	size_t nr_unreadable = 2;
	int ret = uffd_dirty_read_pages(tr, spans, 3, buf, 3 * page, unreadable, &nr_unreadable);
	CHECK(ret == 0, "read_pages: %d: %s", ret, uffd_dirty_last_error());
	CHECK(nr_unreadable == 1 && unreadable[0].start == 0 && unreadable[0].end == page,
	      "read_pages: %zu unreadable spans, expected page 0", nr_unreadable);
	size_t nonzero = 0;
	while (nonzero < page && buf[nonzero] == 0)
		nonzero++;
	CHECK(nonzero == page, "read_pages: unreadable page not zero at byte %zu", nonzero);
	for (int k = 0; k < 2; k++) {
		uint32_t idx = k ? b : a;
		uint64_t first, last;
		memcpy(&first, buf + (size_t)(k + 1) * page, 8);
		memcpy(&last, buf + (size_t)(k + 2) * page - 8, 8);
		CHECK(first == pattern(round, idx) && last == pattern(round, idx),
		      "read_pages: page %u holds %#" PRIx64 "/%#" PRIx64 ", written %#" PRIx64, idx,
		      first, last, pattern(round, idx));
	}
	/* Out of order, too small a buffer, NULL. */
	struct uffd_dirty_span backwards[2] = { spans[2], spans[1] };
	if (a != b)
		expect_error("read_pages out of order",
			     uffd_dirty_read_pages(tr, backwards, 2, buf, 3 * page, NULL, NULL),
			     UFFD_DIRTY_ERROR_BAD_INPUT);
	expect_error("read_pages buffer too small",
		     uffd_dirty_read_pages(tr, spans, 3, buf, 2 * page, NULL, NULL),
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	expect_error("read_pages NULL tracker",
		     uffd_dirty_read_pages(NULL, spans, 3, buf, 3 * page, NULL, NULL),
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	free(buf);
}

/* One method against a forked child: 0, or -1 if this kernel lacks it. */
static int track_method(int method, char *region)
{
	struct kid kid = fork_child(region);
	uint64_t base = (uint64_t)(uintptr_t)region + page;
	struct uffd_dirty_span range = { base, base + (uint64_t)PAGES * page };

	struct uffd_dirty_target *t = uffd_dirty_target_open(kid.pid);
	CHECK(t, "target_open(%d): %s", kid.pid, uffd_dirty_last_error());
	CHECK(uffd_dirty_target_pid(t) == kid.pid, "target_pid");
	CHECK(uffd_dirty_target_fd(t) >= 0, "target_fd");
	CHECK(uffd_dirty_target_has_exited(t) == 0, "target_has_exited");

	if (method == UFFD_DIRTY_METHOD_PAGEMAP_SCAN) {
		/* Options that cannot work, against a live target. */
		struct uffd_dirty_attach_opts zero;
		memset(&zero, 0, sizeof zero);
		expect_error("attach opts.sz 0", uffd_dirty_attach(t, &zero) != NULL,
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		UFFD_DIRTY_ATTACH_OPTS(bad_method, .method = 99);
		expect_error("attach method 99", uffd_dirty_attach(t, &bad_method) != NULL,
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		UFFD_DIRTY_ATTACH_OPTS(bad_flags, .flags = 0x80);
		expect_error("attach unknown flag", uffd_dirty_attach(t, &bad_flags) != NULL,
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		struct uffd_dirty_span nowhere = { 0x10000, 0x20000 };
		UFFD_DIRTY_ATTACH_OPTS(bad_range, .ranges = &nowhere, .nr_ranges = 1);
		expect_error("attach range without a mapping", uffd_dirty_attach(t, &bad_range) != NULL,
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		const char *names[] = { "no-such-mapping*" };
		UFFD_DIRTY_ATTACH_OPTS(bad_name, .names = names, .nr_names = 1);
		expect_error("attach selector picking nothing", uffd_dirty_attach(t, &bad_name) != NULL,
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		UFFD_DIRTY_ATTACH_OPTS(null_ranges, .nr_ranges = 2);
		expect_error("attach NULL ranges", uffd_dirty_attach(t, &null_ranges) != NULL,
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		expect_error("target_wait of an opened PID", uffd_dirty_target_wait(t),
			     UFFD_DIRTY_ERROR_BAD_INPUT);

		/* A caller built with a newer header: its struct is longer. Fields this library
		 * does not know are refused when set, and ignored when zero. */
		struct {
			struct uffd_dirty_attach_opts o;
			uint64_t future;
		} newer;
		memset(&newer, 0, sizeof newer);
		newer.o.sz = sizeof newer;
		newer.o.ranges = &range;
		newer.o.nr_ranges = 1;
		newer.o.kinds = UFFD_DIRTY_KIND_ANON;
		newer.future = 1;
		expect_error("attach with a newer struct setting an unknown field",
			     uffd_dirty_attach(t, &newer.o) != NULL, UFFD_DIRTY_ERROR_BAD_INPUT);
		newer.future = 0;
		struct uffd_dirty_tracker *tr = uffd_dirty_attach(t, &newer.o);
		CHECK(tr, "attach with a newer struct, unknown fields zero: %s",
		      uffd_dirty_last_error());
		uffd_dirty_detach(tr);
		UFFD_DIRTY_ATTACH_OPTS(not_anon, .ranges = &range, .nr_ranges = 1,
				       .kinds = UFFD_DIRTY_KIND_FILE | UFFD_DIRTY_KIND_SHMEM);
		expect_error("attach to kinds the range does not hold",
			     uffd_dirty_attach(t, &not_anon) != NULL, UFFD_DIRTY_ERROR_BAD_INPUT);
	}

	UFFD_DIRTY_ATTACH_OPTS(opts, .method = method, .ranges = &range, .nr_ranges = 1);
	struct uffd_dirty_tracker *tr = uffd_dirty_attach(t, &opts);
	if (!tr && uffd_dirty_last_error_kind() == UFFD_DIRTY_ERROR_UNSUPPORTED) {
		printf("method=%s unsupported: %s\n", method_name(method), uffd_dirty_last_error());
		uint32_t stop = STOP;
		write_all(kid.cmd, &stop, sizeof stop);
		reap(kid.pid);
		uffd_dirty_target_free(t);
		return -1;
	}
	CHECK(tr, "attach %s: %s", method_name(method), uffd_dirty_last_error());
	CHECK(uffd_dirty_tracker_pid(tr) == kid.pid, "tracker_pid");
	CHECK(uffd_dirty_tracker_page_size(tr) == page, "tracker_page_size");

	struct uffd_dirty_harvest *h = uffd_dirty_harvest_new();
	CHECK(h, "harvest_new");
	static uint32_t list[PAGES];
	static unsigned char written[PAGES], reported[PAGES];
	uint64_t total_written = 0, total_reported = 0, lost = 0, false_pos = 0, outside = 0;
	uint64_t max_cost = 0;

	for (uint32_t round = 0; round < ROUNDS; round++) {
		uint32_t n;
		write_all(kid.cmd, &round, sizeof round);
		CHECK(read_all(kid.ack, &n, sizeof n) == 0 && n <= PAGES &&
			      read_all(kid.ack, list, n * sizeof list[0]) == 0,
		      "the child died in round %u", round);
		int ret = uffd_dirty_harvest(tr, h);
		CHECK(ret == 0, "harvest %u: %d (%s): %s", round, ret, uffd_dirty_strerror(ret),
		      uffd_dirty_last_error());
		CHECK(uffd_dirty_harvest_seq(h) == round + 1, "harvest_seq");
		CHECK(!uffd_dirty_harvest_after_exec(h), "harvest_after_exec");
		CHECK(uffd_dirty_harvest_time_ns(h) > 0, "harvest_time_ns");
		if (uffd_dirty_harvest_cost_ns(h) > max_cost)
			max_cost = uffd_dirty_harvest_cost_ns(h);
		size_t nt;
		const struct uffd_dirty_span *tracked = uffd_dirty_harvest_tracked(h, &nt);
		CHECK(nt == 1 && tracked[0].start == range.start && tracked[0].end == range.end,
		      "harvest_tracked: %zu spans, expected the range", nt);

		memset(written, 0, sizeof written);
		memset(reported, 0, sizeof reported);
		for (uint32_t k = 0; k < n; k++)
			written[list[k]] = 1;
		size_t ns;
		const struct uffd_dirty_span *s = uffd_dirty_harvest_spans(h, &ns);
		uint64_t pages = 0, prev_end = 0;
		for (size_t k = 0; k < ns; k++) {
			CHECK(s[k].start < s[k].end && s[k].start % page == 0 && s[k].end % page == 0,
			      "span %zu %#" PRIx64 "-%#" PRIx64 " is not whole pages", k, s[k].start,
			      s[k].end);
			CHECK(k == 0 || s[k].start > prev_end, "spans out of order or touching");
			prev_end = s[k].end;
			for (uint64_t a = s[k].start; a < s[k].end; a += page, pages++) {
				if (a < range.start || a >= range.end)
					outside++;
				else
					reported[(a - base) / page] = 1;
			}
		}
		CHECK(pages == uffd_dirty_harvest_dirty_pages(h),
		      "harvest_dirty_pages %" PRIu64 " but the spans hold %" PRIu64,
		      uffd_dirty_harvest_dirty_pages(h), pages);
		uint64_t round_lost = 0, round_fp = 0;
		for (uint32_t i = 0; i < PAGES; i++) {
			round_lost += written[i] && !reported[i];
			round_fp += reported[i] && !written[i];
		}
		if (round_lost)
			fprintf(stderr, "round %u: %" PRIu64 " of %u written pages not reported\n",
				round, round_lost, n);
		total_written += n;
		total_reported += pages;
		lost += round_lost;
		false_pos += round_fp;
		if (round == 4 && n > 0)
			check_read_pages(tr, base, round, list, n);
	}
	CHECK(lost == 0, "%s lost %" PRIu64 " writes", method_name(method), lost);
	CHECK(outside == 0, "%s reported %" PRIu64 " pages outside the range", method_name(method),
	      outside);
	printf("method=%s rounds=%u written=%" PRIu64 " reported=%" PRIu64 " lost=%" PRIu64
	       " false_positives=%" PRIu64 " out_of_range=%" PRIu64 " max_harvest_us=%" PRIu64 "\n",
	       method_name(method), ROUNDS, total_written, total_reported, lost, false_pos, outside,
	       max_cost / 1000);

	/* The child exits: the next harvest says so, and so does reading its pages. */
	uint32_t stop = STOP;
	write_all(kid.cmd, &stop, sizeof stop);
	reap(kid.pid);
	CHECK(uffd_dirty_target_has_exited(t) == 1, "target_has_exited after the exit");
	expect_error("harvest after the exit", uffd_dirty_harvest(tr, h),
		     UFFD_DIRTY_ERROR_GONE_EXITED);
	size_t ns;
	uffd_dirty_harvest_spans(h, &ns);
	CHECK(ns == 0, "a failed harvest holds %zu spans", ns);
	char *all = malloc(PAGES * page);
	expect_error("read_pages after the exit",
		     uffd_dirty_read_pages(tr, &range, 1, all, PAGES * page, NULL, NULL),
		     UFFD_DIRTY_ERROR_GONE_EXITED);
	free(all);

	uffd_dirty_harvest_free(h);
	uffd_dirty_detach(tr);
	uffd_dirty_target_free(t);
	close(kid.cmd);
	close(kid.ack);
	return 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

/* Harvest a launched command every 10 ms until a harvest fails (at most 10 s): the negated
 * kind; counts harvests that followed an exec. */
static int harvest_until_gone(struct uffd_dirty_tracker *tr, unsigned *after_exec)
{
	struct uffd_dirty_harvest *h = uffd_dirty_harvest_new();
	int ret = 0;
	for (int i = 0; i < 1000 && ret == 0; i++) {
		ret = uffd_dirty_harvest(tr, h);
		if (ret == 0 && uffd_dirty_harvest_after_exec(h))
			++*after_exec;
		if (ret == 0)
			sleep_ms(10);
	}
	uffd_dirty_harvest_free(h);
	return ret;
}

static int open_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void launched(void)
{
	int fds_before = open_fds();
	/* An exit status. */
	const char *exit7[] = { "sh", "-c", "exit 7", NULL };
	struct uffd_dirty_target *t = uffd_dirty_target_launch(exit7);
	CHECK(t, "target_launch: %s", uffd_dirty_last_error());
	expect_error("target_wait before attach", uffd_dirty_target_wait(t),
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	struct uffd_dirty_tracker *tr = uffd_dirty_attach(t, NULL);
	CHECK(tr, "attach to a launched command: %s", uffd_dirty_last_error());
	unsigned after_exec = 0;
	expect_error("harvest after a launched command exited", harvest_until_gone(tr, &after_exec),
		     UFFD_DIRTY_ERROR_GONE_EXITED);
	int status = uffd_dirty_target_wait(t);
	CHECK(status == 7, "target_wait: %d, expected 7: %s", status, uffd_dirty_last_error());
	printf("launched sh -c 'exit 7': gone exited, status %d\n", status);
	uffd_dirty_detach(tr);
	uffd_dirty_target_free(t);

	/* An exec, followed (the default), then the exit. */
	const char *follow[] = { "sh", "-c", "exec sleep 0.3", NULL };
	t = uffd_dirty_target_launch(follow);
	CHECK(t, "target_launch: %s", uffd_dirty_last_error());
	tr = uffd_dirty_attach(t, NULL);
	CHECK(tr, "attach: %s", uffd_dirty_last_error());
	after_exec = 0;
	expect_error("harvest after an exec followed, then the exit",
		     harvest_until_gone(tr, &after_exec), UFFD_DIRTY_ERROR_GONE_EXITED);
	CHECK(after_exec == 1, "%u harvests followed an exec, expected 1", after_exec);
	CHECK(uffd_dirty_target_wait(t) == 0, "target_wait after sleep");
	printf("launched sh -c 'exec sleep 0.3': exec followed, then gone exited\n");
	uffd_dirty_detach(tr);
	uffd_dirty_target_free(t);

	/* An exec, not followed. */
	const char *nofollow[] = { "sh", "-c", "exec sleep 5", NULL };
	t = uffd_dirty_target_launch(nofollow);
	CHECK(t, "target_launch: %s", uffd_dirty_last_error());
	UFFD_DIRTY_ATTACH_OPTS(opts, .flags = UFFD_DIRTY_ATTACH_NO_FOLLOW_EXEC);
	tr = uffd_dirty_attach(t, &opts);
	CHECK(tr, "attach: %s", uffd_dirty_last_error());
	after_exec = 0;
	expect_error("harvest after an exec not followed", harvest_until_gone(tr, &after_exec),
		     UFFD_DIRTY_ERROR_GONE_EXEC);
	uffd_dirty_detach(tr);
	/* Freeing it terminates the command (SIGTERM): sleep's status says so. */
	uffd_dirty_target_free(t);

	/* A program that cannot run: the attach says so, naming it, with the errno. */
	const char *missing[] = { "/nonexistent/uffd-dirty-capi-test", NULL };
	t = uffd_dirty_target_launch(missing);
	CHECK(t, "target_launch: %s", uffd_dirty_last_error());
	CHECK(!uffd_dirty_attach(t, NULL), "attach to a program that cannot run succeeded");
	int kind = uffd_dirty_last_error_kind();
	CHECK(kind == UFFD_DIRTY_ERROR_OTHER && uffd_dirty_last_errno() == ENOENT &&
		      strstr(uffd_dirty_last_error(), "/nonexistent/uffd-dirty-capi-test"),
	      "attach to a program that cannot run: %s: %s", uffd_dirty_strerror(kind),
	      uffd_dirty_last_error());
	printf("error attach to a program that cannot run: %s (errno %d): %s\n",
	       uffd_dirty_strerror(kind), uffd_dirty_last_errno(), uffd_dirty_last_error());
	uffd_dirty_target_free(t);

	const char *empty[] = { NULL };
	expect_error("target_launch of no command", uffd_dirty_target_launch(empty) != NULL,
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	expect_error("target_launch NULL", uffd_dirty_target_launch(NULL) != NULL,
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	/* Every launched target's fds are closed once it is freed. */
	int fds_after = open_fds();
	CHECK(fds_after == fds_before, "launches left fds open: %d before, %d after", fds_before,
	      fds_after);
	printf("launches: fds open before %d, after freeing every target %d\n", fds_before,
	       fds_after);
}

static void bad_targets(void)
{
	/* A PID that no longer exists: a child, reaped. */
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	reap(pid);
	expect_error("target_open of an exited PID", uffd_dirty_target_open(pid) != NULL,
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	expect_error("target_open(-1)", uffd_dirty_target_open(-1) != NULL,
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	expect_error("target_open of itself", uffd_dirty_target_open(getpid()) != NULL,
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	CHECK(uffd_dirty_last_errno() == 0, "a bad-input error has no errno");

	expect_error("harvest NULL tracker", uffd_dirty_harvest(NULL, NULL),
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	expect_error("attach NULL target", uffd_dirty_attach(NULL, NULL) != NULL,
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	expect_error("target_pid NULL", uffd_dirty_target_pid(NULL), UFFD_DIRTY_ERROR_BAD_INPUT);
	size_t n = 99;
	CHECK(uffd_dirty_harvest_spans(NULL, &n) == NULL && n == 0, "harvest_spans(NULL)");
	/* The free functions take NULL. */
	uffd_dirty_target_free(NULL);
	uffd_dirty_detach(NULL);
	uffd_dirty_harvest_free(NULL);
	CHECK(strcmp(uffd_dirty_strerror(-UFFD_DIRTY_ERROR_GONE_EXEC), "gone: exec") == 0 &&
		      strcmp(uffd_dirty_strerror(UFFD_DIRTY_ERROR_GONE_EXEC), "gone: exec") == 0,
	      "strerror");
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	page = (size_t)sysconf(_SC_PAGESIZE);
	printf("libuffd_dirty %s\n", uffd_dirty_version());
	CHECK(uffd_dirty_last_error_kind() == UFFD_DIRTY_ERROR_OK && !*uffd_dirty_last_error(),
	      "a fresh thread has no last error");

	/* The child's memory: PAGES tracked pages between two untracked ones. The even pages are
	 * populated before the fork (copy-on-write in the child), the odd ones are not. */
	char *region = mmap(NULL, (PAGES + 2) * page, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	for (uint32_t i = 0; i < PAGES + 2; i += 2)
		region[(size_t)i * page] = 1;

	if (track_method(UFFD_DIRTY_METHOD_PAGEMAP_SCAN, region) < 0) {
		printf("SKIP: this kernel cannot track with pagemap-scan: %s\n",
		       uffd_dirty_last_error());
		return 77;
	}
	track_method(UFFD_DIRTY_METHOD_PAGEMAP_READ, region);
	track_method(UFFD_DIRTY_METHOD_SOFT_DIRTY, region);
	bad_targets();
	launched();
	printf("capi_track: %u checks passed\n", checks);
	return 0;
}
