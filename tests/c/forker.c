/* A target that forks all the time: a second thread forks every 200 us while the main thread
 * computes. Each child looks in its fd table for a userfaultfd (one inherited from the target
 * while a tracker attached), prints "leak PID" if it finds one, and exits 50 ms later; the
 * target reaps them. Attaching must never hand the target's children a userfaultfd. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void look_for_uffd(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    struct dirent *e;
    char path[64], link[64];
    while ((e = readdir(d))) {
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n > 0) {
            link[n] = 0;
            if (strstr(link, "userfaultfd")) {
                printf("leak %d\n", getpid());
                fflush(stdout);
            }
        }
    }
    closedir(d);
}

static void *fork_often(void *arg) {
    (void)arg;
    for (;;) {
        pid_t c = fork();
        if (c == 0) {
            look_for_uffd();
            struct timespec d = {0, 50000000};
            nanosleep(&d, NULL);
            _exit(0);
        }
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
        struct timespec gap = {0, 200000};
        nanosleep(&gap, NULL);
    }
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, fork_often, NULL);
    printf("ready %d\n", getpid());
    fflush(stdout);
    volatile unsigned long sink = 0;
    for (;;)
        for (int i = 0; i < 1000000; i++) sink += i;
}
