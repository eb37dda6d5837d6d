/* LD_PRELOAD into the tracker: SIGKILL the tracker just before or just after the Nth ptrace()
 * call made by it or by any process it starts (its attach helper).
 *   KILL_SHIM_AT=N        the call to kill at (1-based; 0 = never)
 *   KILL_SHIM_WHEN=before|after
 *   KILL_SHIM_COUNT=FILE  where to write how many calls were made so far
 * The first process that loads the shim is the tracker: it records its PID for the others. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int calls;

__attribute__((constructor)) static void remember_tracker(void) {
    if (!getenv("KILL_SHIM_TRACKER")) {
        char pid[16];
        snprintf(pid, sizeof pid, "%d", getpid());
        setenv("KILL_SHIM_TRACKER", pid, 1);
    }
}

long ptrace(int request, ...) {
    static long (*real)(int, pid_t, void *, void *);
    if (!real) real = (long (*)(int, pid_t, void *, void *))dlsym(RTLD_NEXT, "ptrace");
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);

    calls++;
    const char *at_s = getenv("KILL_SHIM_AT");
    const char *when = getenv("KILL_SHIM_WHEN");
    const char *count = getenv("KILL_SHIM_COUNT");
    int at = at_s ? atoi(at_s) : 0;
    pid_t tracker = atoi(getenv("KILL_SHIM_TRACKER"));
    int after = when && !strcmp(when, "after");
    if (count) {
        int fd = open(count, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            char b[16];
            int n = snprintf(b, sizeof b, "%d\n", calls);
            if (write(fd, b, n) < 0) {}
            close(fd);
        }
    }
    if (calls == at && !after) kill(tracker, SIGKILL);
    long r = real(request, pid, addr, data);
    int saved = errno;
    if (calls == at && after) kill(tracker, SIGKILL);
    errno = saved;
    return r;
}
