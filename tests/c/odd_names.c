/* A target whose names are hostile: it maps files of DIR named with bytes that are not UTF-8
 * or with terminal escapes, writes a byte to each of their pages every 2 ms, and prints
 * "ready PID". Usage: odd_names DIR bytes|escapes.
 *   bytes:   before "ready", a file named "a\xff\xfe-before" (and its comm is not UTF-8
 *            either); on a byte on stdin, a file named "late\xc3\x28 after" and an unlinked
 *            "gone\xff" (the kernel adds " (deleted)"), then "mapped".
 *   escapes: files named "\e]0;pwned\a" (which sets a terminal's title) and "\e[2J\e[8m"
 *            (clears the screen, then hides text), written; the first also mapped shared
 *            and read-only, which the tracker cannot arm and so names in a warning.
 * It exits when stdin reaches EOF. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#define PAGES 4
#define MAX_MAPS 8

static char *maps[MAX_MAPS];
static int nmaps;

static char *map_file(const char *dir, const char *name, int shared_readonly, int unlink_it) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, shared_readonly ? O_RDONLY | O_CREAT : O_RDWR | O_CREAT, 0600);
    if (fd < 0 || (!shared_readonly && ftruncate(fd, PAGES * 4096) != 0)) {
        perror(path);
        exit(2);
    }
    char *p = shared_readonly ? mmap(NULL, PAGES * 4096, PROT_READ, MAP_SHARED, fd, 0)
                              : mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    close(fd);
    if (unlink_it) unlink(path);
    if (!shared_readonly) maps[nmaps++] = p;
    return p;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: odd_names DIR bytes|escapes\n");
        return 2;
    }
    const char *dir = argv[1];
    int bytes = strcmp(argv[2], "bytes") == 0;
    if (bytes) {
        prctl(PR_SET_NAME, "odd\xff\xfe", 0, 0, 0);
        map_file(dir, "a\xff\xfe-before", 0, 0);
    } else {
        map_file(dir, "\x1b]0;pwned\x07", 0, 0);
        map_file(dir, "\x1b[2J\x1b[8m", 0, 0);
        map_file(dir, "\x1b]0;pwned\x07", 1, 0);
    }
    printf("ready %d\n", getpid());
    fflush(stdout);
    unsigned char round = 0;
    for (;;) {
        struct pollfd in = {.fd = 0, .events = POLLIN};
        if (poll(&in, 1, 2) > 0) {
            char c;
            if (read(0, &c, 1) <= 0) return 0;
            if (bytes && nmaps < MAX_MAPS - 2) {
                map_file(dir, "late\xc3\x28 after", 0, 0);
                map_file(dir, "gone\xff", 0, 1);
                printf("mapped\n");
                fflush(stdout);
            }
        }
        round++;
        for (int m = 0; m < nmaps; m++)
            for (int i = 0; i < PAGES; i++) maps[m][i * 4096] = round;
    }
}
