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
 * Attached with UFFD_DIRTY_ATTACH_REPORT_POPULATED, the first harvest must report exactly the
 * pages populated before the fork. A last round freezes the child while it writes on its own (uffd_dirty_target_freeze):
 * its progress counter, in shared memory, must stand still until the thaw, and a thaw from
 * another thread must be refused; the harvest under the freeze must hold exactly the pages
 * written, and their contents read then must be the last values written.
 *
 * Mapping changes, for each method: a child maps new anonymous memory and a private file
 * mapping, moves a mapping with mremap and unmaps another, between two harvests; the
 * harvest's changes must be exactly those.
 *
 * Then the error paths: bad PIDs, bad options, NULLs, a harvest after the child exited; and
 * launched commands: an exit status, an exec followed, an exec not followed.
 *
 * Prints one line per method ("method=NAME rounds=.. written=.. reported=.. lost=..
 * false_positives=.. out_of_range=..", then "freeze method=NAME ..." and "changes
 * method=NAME ...") and "capi_track: N checks passed"; exits 1 on the first failed check, and 77
 * (printing the reason) where this kernel cannot track at all.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
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
/* The child writes on its own, one page every 100 us, until `shared->stop`. */
#define SPIN (UINT32_MAX - 1)

static size_t page;
static unsigned checks;

/* Shared with every child (MAP_SHARED, set up before the forks): its progress while it
 * spins, which the parent watches without asking it. */
struct shared {
	_Atomic uint64_t counter;
	_Atomic uint32_t stop;
};
static struct shared *shared;

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

/* The value of the spinning child's write number n, to page n % PAGES. */
static uint64_t spin_pattern(uint64_t n)
{
	return 0x5350494e00000000ull | n;
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
		if (round == SPIN) {
			/* Write n goes to page n % PAGES, then the counter says n + 1: whenever
			 * the child stands still, every write below the counter is done. */
			struct timespec tick = { 0, 100000 };
			while (!atomic_load(&shared->stop)) {
				uint64_t c = atomic_load(&shared->counter);
				volatile uint64_t *p =
					(volatile uint64_t *)(region + (size_t)(c % PAGES + 1) * page);
				p[0] = spin_pattern(c);
				atomic_store(&shared->counter, c + 1);
				nanosleep(&tick, NULL);
			}
			write_all(ack, &n, sizeof n);
			continue;
		}
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

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Whether the spinning child's counter passes `v` within `ms` milliseconds. */
static int counter_passes(uint64_t v, uint64_t ms)
{
	uint64_t deadline = now_ms() + ms;
	while (atomic_load(&shared->counter) <= v) {
		if (now_ms() > deadline)
			return 0;
		sleep_ms(1);
	}
	return 1;
}

/* The pages of `spans` (n of them) as indices from `base`, marked in `seen` (PAGES of them);
 * returns how many pages lie outside [base, base + PAGES pages). */
static uint64_t mark_pages(const struct uffd_dirty_span *spans, size_t n, uint64_t base,
			   unsigned char *seen)
{
	uint64_t outside = 0;
	memset(seen, 0, PAGES);
	for (size_t k = 0; k < n; k++) {
		CHECK(spans[k].start < spans[k].end && spans[k].start % page == 0 &&
			      spans[k].end % page == 0 && (k == 0 || spans[k].start > spans[k - 1].end),
		      "span %zu %#" PRIx64 "-%#" PRIx64 " is not whole pages in order", k,
		      spans[k].start, spans[k].end);
		for (uint64_t a = spans[k].start; a < spans[k].end; a += page) {
			if (a < base || a >= base + (uint64_t)PAGES * page)
				outside++;
			else
				seen[(a - base) / page] = 1;
		}
	}
	return outside;
}

/* Attached with UFFD_DIRTY_ATTACH_REPORT_POPULATED (userfaultfd methods), before the child
 * wrote anything: the first harvest reports exactly the pages populated before the fork (the
 * region's odd tracked indices), no more, no fewer. Soft-dirty clears its bits at attach,
 * so its first harvest is empty. */
static void check_report_populated(int method, struct uffd_dirty_tracker *tr, uint64_t base)
{
	static unsigned char got[PAGES];
	struct uffd_dirty_harvest *h = uffd_dirty_harvest_new();
	CHECK(h, "harvest_new");
	int ret = uffd_dirty_harvest(tr, h);
	CHECK(ret == 0, "first harvest: %d: %s", ret, uffd_dirty_last_error());
	size_t n = 0;
	const struct uffd_dirty_span *s = uffd_dirty_harvest_spans(h, &n);
	uint64_t outside = mark_pages(s, n, base, got);
	int soft = method == UFFD_DIRTY_METHOD_SOFT_DIRTY;
	uint64_t want = 0, missing = 0, extra = 0;
	for (uint32_t i = 0; i < PAGES; i++) {
		int populated = !soft && i % 2 == 1;
		want += populated;
		missing += populated && !got[i];
		extra += !populated && got[i];
	}
	CHECK(outside == 0 && missing == 0 && extra == 0,
	      "first harvest after a report-populated attach (%s): %" PRIu64 " of %" PRIu64
	      " populated pages missing, %" PRIu64 " extra, %" PRIu64 " outside the range",
	      method_name(method), missing, want, extra, outside);
	printf("report-populated method=%s expected=%" PRIu64 " spans=%zu missing=%" PRIu64
	       " extra=%" PRIu64 "\n",
	       method_name(method), want, n, missing, extra);
	uffd_dirty_harvest_free(h);
}

struct thaw_attempt {
	struct uffd_dirty_frozen *frozen;
	int ret, kind;
	char msg[512];
};

static void *thaw_elsewhere(void *arg)
{
	struct thaw_attempt *a = arg;
	a->ret = uffd_dirty_thaw(a->frozen);
	a->kind = uffd_dirty_last_error_kind();
	snprintf(a->msg, sizeof a->msg, "%s", uffd_dirty_last_error());
	return NULL;
}

static void *freeze_and_exit(void *target)
{
	return uffd_dirty_target_freeze(target);
}

/*
 * The last round: the child writes on its own (page n % PAGES with write number n, then its
 * counter says n + 1) while the target is frozen, harvested, read and thawed. Frozen, its
 * counter stands still, even after a thaw from another thread, which is refused; the harvest
 * holds exactly the writes below the counter (the one at it may be done or not), and the pages
 * read hold the last values written. After the thaw it runs, and the next harvest has its new
 * writes.
 */
static void freeze_round(int method, struct uffd_dirty_target *t, struct uffd_dirty_tracker *tr,
			 struct uffd_dirty_harvest *h, struct kid kid, uint64_t base)
{
	static unsigned char seen[PAGES];
	atomic_store(&shared->stop, 0);
	atomic_store(&shared->counter, 0);
	uint32_t spin = SPIN;
	write_all(kid.cmd, &spin, sizeof spin);
	CHECK(counter_passes(99, 5000), "the spinning child made no progress");

	struct uffd_dirty_frozen *fz = uffd_dirty_target_freeze(t);
	CHECK(fz, "target_freeze: %s", uffd_dirty_last_error());
	uint64_t c1 = atomic_load(&shared->counter), frozen_at = now_ms();

	/* A second freeze (the target is traced already) fails, and the first one holds. */
	CHECK(!uffd_dirty_target_freeze(t), "freezing a frozen target succeeded");
	int kind = uffd_dirty_last_error_kind();
	CHECK(kind != UFFD_DIRTY_ERROR_OK && strstr(uffd_dirty_last_error(), "already traced"),
	      "freeze of a frozen target: %s: %s", uffd_dirty_strerror(kind),
	      uffd_dirty_last_error());
	if (method == UFFD_DIRTY_METHOD_PAGEMAP_SCAN)
		printf("error freeze of a frozen target: %s: %s\n", uffd_dirty_strerror(kind),
		       uffd_dirty_last_error());

	uint64_t dirty = 0, read_checked = 0;
	/* The final round of a pre-copy: every mapping change in its changes. */
	CHECK(uffd_dirty_relist_mappings(tr) == 0, "relist_mappings: %s", uffd_dirty_last_error());
	expect_error("relist_mappings NULL tracker", uffd_dirty_relist_mappings(NULL),
		     UFFD_DIRTY_ERROR_BAD_INPUT);
	int ret = uffd_dirty_harvest(tr, h);
	if (method == UFFD_DIRTY_METHOD_SOFT_DIRTY) {
		/* Its harvest stops the target itself: not while the caller holds it. */
		CHECK(ret < 0, "a soft-dirty harvest while the caller holds the target succeeded");
		printf("error soft-dirty harvest while frozen: %s: %s\n", uffd_dirty_strerror(ret),
		       uffd_dirty_last_error());
	} else {
		CHECK(ret == 0, "harvest while frozen: %d: %s", ret, uffd_dirty_last_error());
		size_t ns;
		const struct uffd_dirty_span *s = uffd_dirty_harvest_spans(h, &ns);
		uint64_t outside = mark_pages(s, ns, base, seen);
		uint64_t lost = 0, extra = 0;
		for (uint32_t i = 0; i < PAGES; i++) {
			int want = c1 >= PAGES || i < c1;
			lost += want && !seen[i];
			extra += seen[i] && !want && i != c1 % PAGES;
			dirty += seen[i];
		}
		CHECK(outside == 0 && lost == 0 && extra == 0,
		      "harvest while frozen at %" PRIu64 " writes: %" PRIu64 " lost, %" PRIu64
		      " extra, %" PRIu64 " outside",
		      c1, lost, extra, outside);
		/* The copy: the frozen pages hold the last value written to them. */
		uint64_t bytes = dirty * page;
		char *buf = malloc(bytes ? bytes : 1);
		ret = uffd_dirty_read_pages(tr, s, ns, buf, bytes, NULL, NULL);
		CHECK(ret == 0, "read_pages while frozen: %s", uffd_dirty_last_error());
		uint64_t off = 0;
		for (size_t k = 0; k < ns; k++) {
			for (uint64_t a = s[k].start; a < s[k].end; a += page, off += page) {
				uint64_t i = (a - base) / page, v;
				/* The last write n < c1 to page i, if any. */
				if (i >= c1)
					continue;
				uint64_t n = i + (c1 - 1 - i) / PAGES * PAGES;
				memcpy(&v, buf + off, 8);
				CHECK(v == spin_pattern(n),
				      "page %" PRIu64 " read while frozen holds %#" PRIx64
				      ", its last write was %#" PRIx64,
				      i, v, spin_pattern(n));
				read_checked++;
			}
		}
		free(buf);
	}
	sleep_ms(50);
	uint64_t c2 = atomic_load(&shared->counter);
	CHECK(c2 == c1, "the child ran while frozen: %" PRIu64 " writes, then %" PRIu64, c1, c2);

	/* Another thread cannot thaw it: refused, the target still frozen, the handle valid. */
	struct thaw_attempt other = { .frozen = fz };
	pthread_t th;
	CHECK(pthread_create(&th, NULL, thaw_elsewhere, &other) == 0, "pthread_create");
	pthread_join(th, NULL);
	CHECK(other.ret == -UFFD_DIRTY_ERROR_BAD_INPUT && other.kind == UFFD_DIRTY_ERROR_BAD_INPUT,
	      "thaw from another thread: %d (%s): %s", other.ret, uffd_dirty_strerror(other.ret),
	      other.msg);
	if (method == UFFD_DIRTY_METHOD_PAGEMAP_SCAN)
		printf("error thaw from another thread: %s: %s\n",
		       uffd_dirty_strerror(other.kind), other.msg);
	sleep_ms(20);
	c2 = atomic_load(&shared->counter);
	CHECK(c2 == c1, "the child ran after a refused thaw: %" PRIu64 " writes, then %" PRIu64,
	      c1, c2);

	ret = uffd_dirty_thaw(fz);
	CHECK(ret == 0, "thaw: %d: %s", ret, uffd_dirty_last_error());
	uint64_t frozen_ms = now_ms() - frozen_at;
	CHECK(counter_passes(c1 + 1, 2000), "the child did not run after the thaw");

	if (method == UFFD_DIRTY_METHOD_PAGEMAP_SCAN) {
		/* A thread that freezes the target and exits: the kernel lets the target go, and
		 * the handle is freed from any thread of the process. */
		void *fz2 = NULL;
		CHECK(pthread_create(&th, NULL, freeze_and_exit, t) == 0, "pthread_create");
		pthread_join(th, &fz2);
		CHECK(fz2, "target_freeze on a thread that exits");
		uint64_t c3 = atomic_load(&shared->counter);
		CHECK(counter_passes(c3, 2000),
		      "the child stays frozen after the freezing thread exited");
		CHECK(uffd_dirty_thaw(fz2) == 0, "thaw after the freezing thread exited: %s",
		      uffd_dirty_last_error());
		CHECK(uffd_dirty_thaw(NULL) == 0, "thaw(NULL)");
		printf("freeze on a thread that exited: the target ran on, thaw from another "
		       "thread freed it\n");
	}

	/* After the thaw: its writes are harvested again. */
	atomic_store(&shared->stop, 1);
	uint32_t n;
	CHECK(read_all(kid.ack, &n, sizeof n) == 0, "the child died spinning");
	uint64_t last = atomic_load(&shared->counter) - 1;
	ret = uffd_dirty_harvest(tr, h);
	CHECK(ret == 0, "harvest after the thaw: %d: %s", ret, uffd_dirty_last_error());
	size_t ns;
	const struct uffd_dirty_span *s = uffd_dirty_harvest_spans(h, &ns);
	mark_pages(s, ns, base, seen);
	CHECK(seen[last % PAGES], "the write after the thaw (page %" PRIu64 ") is not reported",
	      last % PAGES);
	printf("freeze method=%s writes_before=%" PRIu64 " frozen_ms=%" PRIu64
	       " writes_while_frozen=%" PRIu64 " harvested_frozen=%" PRIu64 " read_checked=%" PRIu64
	       " writes_after_thaw=%" PRIu64 "\n",
	       method_name(method), c1, frozen_ms, c2 - c1, dirty, read_checked, last + 1 - c1);
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

	UFFD_DIRTY_ATTACH_OPTS(opts, .method = method, .ranges = &range, .nr_ranges = 1,
			       .flags = method == UFFD_DIRTY_METHOD_SOFT_DIRTY ?
						0 :
						UFFD_DIRTY_ATTACH_REPORT_POPULATED);
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
	check_report_populated(method, tr, base);

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
		CHECK(uffd_dirty_harvest_seq(h) == round + 2, "harvest_seq (after the first, report-populated harvest)");
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

	freeze_round(method, t, tr, h, kid, base);

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

/*
 * Mapping changes. The child's memory in a hole of HOLE pages (in pages from its start):
 * before the attach, M at 20-24 and U at 40-42; between two harvests the child maps new
 * anonymous memory A at 2-10 (writing its pages 0, 2 and 3) and the file privately at 12-15
 * (writing its page 1), moves M to 30-34 (mremap), and unmaps U. Gaps keep the mappings
 * apart, so each change is a span of its own.
 */
#define HOLE 64u
#define FILE_PAGES 3u

static void changes_child(int cmd, int ack, uint64_t hole, int fd)
{
	for (;;) {
		uint32_t c;
		if (read_all(cmd, &c, sizeof c) || c == STOP)
			_exit(0);
		int32_t err = 0;
		char *a = mmap((void *)(uintptr_t)(hole + 2 * page), 8 * page, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		char *f = mmap((void *)(uintptr_t)(hole + 12 * page), FILE_PAGES * page,
			       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0);
		if (a == MAP_FAILED || f == MAP_FAILED) {
			err = errno;
		} else {
			a[0] = 1;
			a[2 * page] = 1;
			a[3 * page + 7] = 1;
			f[page] = 1;
			if (mremap((void *)(uintptr_t)(hole + 20 * page), 4 * page, 4 * page,
				   MREMAP_MAYMOVE | MREMAP_FIXED,
				   (void *)(uintptr_t)(hole + 30 * page)) == MAP_FAILED ||
			    munmap((void *)(uintptr_t)(hole + 40 * page), 2 * page))
				err = errno;
		}
		write_all(ack, &err, sizeof err);
	}
}

static int span_is(struct uffd_dirty_span s, uint64_t hole, uint64_t from, uint64_t to)
{
	return s.start == hole + from * page && s.end == hole + to * page;
}

static void check_changes(int method)
{
	char path[] = "/tmp/uffd-dirty-capi-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0, "mkstemp: %s", strerror(errno));
	char *contents = malloc(FILE_PAGES * page);
	memset(contents, 'F', FILE_PAGES * page);
	CHECK(write(fd, contents, FILE_PAGES * page) == (ssize_t)(FILE_PAGES * page), "write");
	free(contents);

	/* A hole in the address space, then M and U in it. */
	char *hole = mmap(NULL, HOLE * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(hole != MAP_FAILED && munmap(hole, HOLE * page) == 0, "mmap: %s", strerror(errno));
	uint64_t h0 = (uint64_t)(uintptr_t)hole;
	char *m = mmap(hole + 20 * page, 4 * page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	char *u = mmap(hole + 40 * page, 2 * page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(m != MAP_FAILED && u != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(m, 'M', 4 * page);
	memset(u, 'U', 2 * page);

	int cmd[2], ack[2];
	CHECK(pipe(cmd) == 0 && pipe(ack) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(cmd[1]);
		close(ack[0]);
		changes_child(cmd[0], ack[1], h0, fd);
	}
	close(cmd[0]);
	close(ack[1]);

	struct uffd_dirty_target *t = uffd_dirty_target_open(pid);
	CHECK(t, "target_open: %s", uffd_dirty_last_error());
	struct uffd_dirty_span range = { h0, h0 + HOLE * page };
	UFFD_DIRTY_ATTACH_OPTS(opts, .method = method, .ranges = &range, .nr_ranges = 1,
			       .flags = method == UFFD_DIRTY_METHOD_SOFT_DIRTY ?
						0 :
						UFFD_DIRTY_ATTACH_REPORT_POPULATED);
	struct uffd_dirty_tracker *tr = uffd_dirty_attach(t, &opts);
	CHECK(tr, "attach %s: %s", method_name(method), uffd_dirty_last_error());
	struct uffd_dirty_harvest *h = uffd_dirty_harvest_new();
	CHECK(uffd_dirty_harvest_nr_changes(h) == 0, "a new harvest has changes");
	CHECK(uffd_dirty_harvest(tr, h) == 0, "harvest: %s", uffd_dirty_last_error());
	CHECK(uffd_dirty_harvest_nr_changes(h) == 0, "%zu changes before any",
	      uffd_dirty_harvest_nr_changes(h));

	uint32_t go = 1;
	int32_t err = -1;
	write_all(cmd[1], &go, sizeof go);
	CHECK(read_all(ack[0], &err, sizeof err) == 0 && err == 0, "the child's mappings: %s",
	      strerror(err));
	CHECK(uffd_dirty_harvest(tr, h) == 0, "harvest: %s", uffd_dirty_last_error());

	size_t nc = uffd_dirty_harvest_nr_changes(h);
	int added_anon = 0, added_file = 0, moved = 0, removed = 0, other = 0;
	for (size_t i = 0; i < nc; i++) {
		UFFD_DIRTY_CHANGE(c);
		int ret = uffd_dirty_harvest_change(h, i, &c);
		CHECK(ret == 0, "harvest_change %zu: %s", i, uffd_dirty_last_error());
		CHECK(c.name != NULL, "change %zu has a NULL name", i);
		printf("change method=%s kind=%d mapping_kind=%d span=+%" PRIu64 "-+%" PRIu64
		       " from=%#" PRIx64 "-%#" PRIx64 " name=\"%s\"\n",
		       method_name(method), c.kind, c.mapping_kind, (c.span.start - h0) / page,
		       (c.span.end - h0) / page, c.from.start, c.from.end, c.name);
		int no_from = c.from.start == 0 && c.from.end == 0;
		if (c.kind == UFFD_DIRTY_CHANGE_KIND_ADDED && span_is(c.span, h0, 2, 10) &&
		    c.mapping_kind == UFFD_DIRTY_MAPPING_KIND_ANON && *c.name && !strchr(c.name, '/') &&
		    no_from) {
			added_anon++;
		} else if (c.kind == UFFD_DIRTY_CHANGE_KIND_ADDED &&
			   span_is(c.span, h0, 12, 12 + FILE_PAGES) &&
			   c.mapping_kind == UFFD_DIRTY_MAPPING_KIND_FILE && strstr(c.name, path) &&
			   no_from) {
			added_file++;
		} else if (c.kind == UFFD_DIRTY_CHANGE_KIND_MOVED && span_is(c.span, h0, 30, 34) &&
			   span_is(c.from, h0, 20, 24) &&
			   c.mapping_kind == UFFD_DIRTY_MAPPING_KIND_ANON) {
			moved++;
		} else if (c.kind == UFFD_DIRTY_CHANGE_KIND_REMOVED && span_is(c.span, h0, 40, 42) &&
			   no_from) {
			removed++;
		} else {
			other++;
		}
	}
	CHECK(nc == 4 && added_anon == 1 && added_file == 1 && moved == 1 && removed == 1,
	      "%s: %zu changes: added anon %d, added file %d, moved %d, removed %d, other %d",
	      method_name(method), nc, added_anon, added_file, moved, removed, other);

	/* The written pages of the new memory are reported (the rest of it is copied whole). */
	size_t ns;
	const struct uffd_dirty_span *s = uffd_dirty_harvest_spans(h, &ns);
	uint64_t written_new = 0;
	for (size_t k = 0; k < ns; k++) {
		CHECK(s[k].start >= range.start && s[k].end <= range.end,
		      "dirty span outside the range");
		for (uint64_t a = s[k].start; a < s[k].end; a += page) {
			uint64_t p = (a - h0) / page;
			written_new += p == 2 || p == 4 || p == 5 || p == 13;
		}
	}
	CHECK(written_new == 4, "%s: %" PRIu64 " of the 4 pages written in new memory reported",
	      method_name(method), written_new);

	/* Populated: A exactly as written; M's pages all, where they moved. */

	if (method == UFFD_DIRTY_METHOD_PAGEMAP_SCAN) {
		UFFD_DIRTY_CHANGE(c);
		expect_error("harvest_change past the end", uffd_dirty_harvest_change(h, nc, &c),
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		expect_error("harvest_change NULL out", uffd_dirty_harvest_change(h, 0, NULL),
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		expect_error("harvest_change NULL harvest", uffd_dirty_harvest_change(NULL, 0, &c),
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		CHECK(uffd_dirty_harvest_nr_changes(NULL) == 0, "harvest_nr_changes(NULL)");
		struct uffd_dirty_change unset;
		memset(&unset, 0, sizeof unset);
		expect_error("harvest_change out->sz 0", uffd_dirty_harvest_change(h, 0, &unset),
			     UFFD_DIRTY_ERROR_BAD_INPUT);
		/* A caller built with a newer header: fields this library does not know read 0. */
		struct {
			struct uffd_dirty_change c;
			uint64_t future;
		} newer;
		memset(&newer, 0xff, sizeof newer);
		newer.c.sz = sizeof newer;
		CHECK(uffd_dirty_harvest_change(h, 0, &newer.c) == 0 && newer.future == 0 &&
			      newer.c.sz == sizeof newer && newer.c.kind != -1,
		      "harvest_change into a newer struct: %s", uffd_dirty_last_error());
	}

	/* Nothing changed since: no changes, and the names went with them. */
	CHECK(uffd_dirty_harvest(tr, h) == 0, "harvest: %s", uffd_dirty_last_error());
	CHECK(uffd_dirty_harvest_nr_changes(h) == 0, "%zu changes after none",
	      uffd_dirty_harvest_nr_changes(h));
	printf("changes method=%s changes=%zu added_anon=%d added_file=%d moved=%d removed=%d "
	       "new_pages_written_reported=%" PRIu64 "\n",
	       method_name(method), nc, added_anon, added_file, moved, removed, written_new);

	uint32_t stop = STOP;
	write_all(cmd[1], &stop, sizeof stop);
	reap(pid);
	uffd_dirty_harvest_free(h);
	uffd_dirty_detach(tr);
	uffd_dirty_target_free(t);
	close(cmd[1]);
	close(ack[0]);
	close(fd);
	unlink(path);
	munmap(m, 4 * page);
	munmap(u, 2 * page);
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

	shared = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		fail("mmap: %s", strerror(errno));

	if (track_method(UFFD_DIRTY_METHOD_PAGEMAP_SCAN, region) < 0) {
		printf("SKIP: this kernel cannot track with pagemap-scan: %s\n",
		       uffd_dirty_last_error());
		return 77;
	}
	check_changes(UFFD_DIRTY_METHOD_PAGEMAP_SCAN);
	if (track_method(UFFD_DIRTY_METHOD_PAGEMAP_READ, region) == 0)
		check_changes(UFFD_DIRTY_METHOD_PAGEMAP_READ);
	if (track_method(UFFD_DIRTY_METHOD_SOFT_DIRTY, region) == 0)
		check_changes(UFFD_DIRTY_METHOD_SOFT_DIRTY);
	bad_targets();
	launched();
	printf("capi_track: %u checks passed\n", checks);
	return 0;
}
