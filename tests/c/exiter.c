/* Maps and fills argv[1] MiB (a large address space makes the exit's teardown, during which
 * the memory is gone and the pidfd not yet readable, last longer); if argv[3] is 1, prints its
 * PID and waits for a byte on stdin; writes pages for argv[2] ms and exits with status 3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
    size_t len = (size_t)atoi(argv[1]) << 20;
    long ms = atol(argv[2]);
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 10;
    memset(p, 1, len);
    if (atoi(argv[3])) {
        printf("%d\n", getpid());
        fflush(stdout);
        char c;
        if (read(0, &c, 1) != 1)
            return 11;
    }
    struct timespec t0, t, nap = {0, 100000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned long i = 0;; i++) {
        p[i * 7 * 4096 % len] = (char)i;
        if (i % 64 == 0)
            nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms)
            return 3;
    }
}
