/* A target flooded with signals: a child process sends it SIGUSR1 every 100 us (10 kHz)
 * while it computes (argument "spin") or sleeps in nanosleep (SA_RESTART handler). Attaching
 * must not give up on the flood. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on_usr1(int sig) { (void)sig; got++; }

int main(int argc, char **argv) {
    int spin = argc > 1 && argv[1][0] == 's';
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    pid_t me = getpid();
    if (fork() == 0) {
        /* The flooder: stops when its parent is gone. */
        struct timespec gap = {0, 100000};
        while (getppid() == me) {
            kill(me, SIGUSR1);
            nanosleep(&gap, NULL);
        }
        _exit(0);
    }
    printf("ready %d\n", me);
    fflush(stdout);
    volatile unsigned long sink = 0;
    for (;;) {
        if (spin) {
            for (int i = 0; i < 1000000; i++) sink += i;
        } else {
            struct timespec d = {0, 1000000};
            nanosleep(&d, NULL);
        }
    }
}
