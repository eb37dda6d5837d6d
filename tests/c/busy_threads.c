/* A target whose threads keep changing state: each of N threads spins for a few microseconds,
 * sleeps for a few, and yields, so /proc/PID/task/TID shows running, sleeping and in-syscall
 * in turn. Attaching must still pick a thread and succeed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *churn(void *arg) {
    unsigned seed = (unsigned)(long)arg;
    volatile unsigned long sink = 0;
    for (;;) {
        int spin = rand_r(&seed) % 20000;
        for (int i = 0; i < spin; i++) sink += i;
        struct timespec d = {0, (rand_r(&seed) % 200) * 1000};
        nanosleep(&d, NULL);
        sched_yield();
    }
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 32;
    for (long i = 0; i < n; i++) {
        pthread_t t;
        pthread_create(&t, NULL, churn, (void *)(i + 1));
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {}
    return 0;
}
