/* A one-thread target for the kill sweep: it sits in one kind of blocking call (or computes),
 * answers every ping with "ok N" once the call returned as it should, and says "bad WHY" when
 * it did not (EINTR, a short sleep, a spurious wake-up, a changed signal mask, a wrong sum).
 * A ping is a byte on stdin, or SIGUSR1 in sigsuspend mode. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NAP_NS 100000000L /* the timed calls sleep 100 ms at a time */

static sigset_t initial_mask;
static volatile sig_atomic_t usr1;
static unsigned long answered;

static void on_usr1(int sig) { (void)sig; usr1++; }

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}

static void bad(const char *why) {
    printf("bad %s (errno %d)\n", why, errno);
    fflush(stdout);
    exit(3);
}

static void answer(void) {
    sigset_t now;
    sigprocmask(SIG_BLOCK, NULL, &now);
    for (int sig = 1; sig < 65; sig++)
        if (sigismember(&now, sig) != sigismember(&initial_mask, sig)) bad("signal mask changed");
    printf("ok %lu\n", ++answered);
    fflush(stdout);
}

/* A pending ping, without blocking. */
static int pinged(void) {
    char c;
    int fl = fcntl(0, F_GETFL);
    fcntl(0, F_SETFL, fl | O_NONBLOCK);
    ssize_t n = read(0, &c, 1);
    fcntl(0, F_SETFL, fl);
    if (n == 0) exit(0);
    return n == 1;
}

static void after_nap(uint64_t started) {
    if (now_ns() - started < NAP_NS) bad("short sleep");
    if (pinged()) answer();
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "read";
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t usr1_set;
    sigemptyset(&usr1_set);
    sigaddset(&usr1_set, SIGUSR1);
    if (!strcmp(mode, "sigsuspend")) sigprocmask(SIG_BLOCK, &usr1_set, NULL);
    sigprocmask(SIG_BLOCK, NULL, &initial_mask);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    uint32_t futex_word = 0;
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        uint64_t t0 = now_ns();
        char c;
        if (!strcmp(mode, "read")) {
            ssize_t n = read(0, &c, 1);
            if (n == 0) return 0;
            if (n != 1) bad("read");
            answer();
        } else if (!strcmp(mode, "nanosleep")) {
            struct timespec d = {0, NAP_NS};
            if (nanosleep(&d, NULL) != 0) bad("nanosleep");
            after_nap(t0);
        } else if (!strcmp(mode, "clock_nanosleep")) {
            struct timespec d = {0, NAP_NS};
            int e = clock_nanosleep(CLOCK_MONOTONIC, 0, &d, NULL);
            if (e) { errno = e; bad("clock_nanosleep"); }
            after_nap(t0);
        } else if (!strcmp(mode, "epoll")) {
            struct epoll_event got;
            int n = epoll_wait(ep, &got, 1, -1);
            if (n != 1) bad("epoll_wait");
            if (read(0, &c, 1) != 1) return 0;
            answer();
        } else if (!strcmp(mode, "futex")) {
            struct timespec d = {0, NAP_NS};
            long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &d, NULL, 0);
            if (r != -1 || errno != ETIMEDOUT) bad("futex");
            after_nap(t0);
        } else if (!strcmp(mode, "sigsuspend")) {
            sig_atomic_t before = usr1;
            sigset_t open;
            sigemptyset(&open);
            if (sigsuspend(&open) != -1 || errno != EINTR) bad("sigsuspend");
            if (usr1 == before) bad("sigsuspend woke without SIGUSR1");
            answer();
        } else if (!strcmp(mode, "poll")) {
            struct pollfd p = {.fd = 0, .events = POLLIN};
            if (poll(&p, 1, -1) != 1) bad("poll");
            if (read(0, &c, 1) != 1) return 0;
            answer();
        } else if (!strcmp(mode, "compute")) {
            /* The same sum, chunk after chunk: a register that changed under us shows. */
            static uint64_t expected;
            uint64_t x = 1;
            for (int i = 0; i < 2000000; i++) x = x * 6364136223846793005u + 1442695040888963407u;
            if (!expected) expected = x;
            if (x != expected) bad("sum changed");
            if (pinged()) answer();
        } else {
            fprintf(stderr, "unknown mode %s\n", mode);
            return 2;
        }
    }
}
