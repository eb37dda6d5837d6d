/* The target of the working-set tests (examples/wss.rs), whose written working set is known
 * exactly. Maps argv[1] pages and writes them all, prints `ready PID` (unless argv[3] is
 * "quiet"), then, every 10 ms, writes the same argv[2] pages (every third page of the
 * region, a new value each time) and nothing else. At the first byte (or the end) of stdin
 * it stops writing for good, and waits in read(2) for stdin to close. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    size_t pages = (size_t)atol(argv[1]), set = (size_t)atol(argv[2]);
    if (set == 0 || set * 3 > pages)
        return 2;
    char *p = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return 10;
    memset(p, 1, pages * PAGE);
    if (argc < 4 || strcmp(argv[3], "quiet") != 0) {
        printf("ready %d\n", getpid());
        fflush(stdout);
    }
    struct pollfd in = {.fd = 0, .events = POLLIN};
    for (unsigned char value = 2; poll(&in, 1, 10) == 0; value++)
        for (size_t i = 0; i < set; i++)
            ((volatile char *)p)[i * 3 * PAGE + value] = (char)value;
    char c;
    while (read(0, &c, 1) > 0) {
    }
    return 0;
}
