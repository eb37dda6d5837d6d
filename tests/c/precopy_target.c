/* The target of the pre-copy tests (examples/precopy.rs). Maps argv[1] MiB and gives every
 * page its own contents, prints `ready PID`, then writes until killed, in passes 100 us apart:
 *   - a hot set of argv[2] pages spread over the buffer, each rewritten on every pass with a
 *     new value (the pass number), so a copy taken before the last pass differs from it;
 *   - argv[3] cold pages per second, picked at random over the whole buffer;
 *   - if argv[4] is 1, every 20 ms, new mappings replace the previous ones: an anonymous one
 *     of 1 to 17 pages, filled, and a private mapping of this program's own file, read but
 *     never written, so that its pages are present yet never reported written. They go to
 *     the next of 32 slots of a window kept for them, so the old ones leave holes that stay
 *     empty for 640 ms. Memory comes and goes between harvests. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define SLOTS 32
#define SLOT (1 << 20)

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Write `value` into one word of page `p`, a different word for each value. */
static void touch(char *p, uint64_t value) {
    ((volatile uint64_t *)p)[value % (PAGE / 8)] = value;
}

int main(int argc, char **argv) {
    if (argc < 5)
        return 2;
    size_t pages = (size_t)atol(argv[1]) * (1 << 20) / PAGE;
    size_t hot = (size_t)atol(argv[2]);
    uint64_t cold_per_s = (uint64_t)atol(argv[3]);
    int churn = atoi(argv[4]);
    char *buf = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED || hot == 0 || hot > pages)
        return 10;
    for (size_t i = 0; i < pages; i++)
        for (size_t w = 0; w < PAGE / 8; w++)
            ((uint64_t *)(buf + i * PAGE))[w] = i * 0x9e3779b97f4a7c15u + w;
    printf("ready %d\n", getpid());
    fflush(stdout);

    uint64_t seed = 88172645463325252u, start = now_ns(), cold_done = 0, churned = 0;
    struct timespec nap = {0, 100000};
    int exe = open("/proc/self/exe", O_RDONLY);
    struct stat st;
    if (exe < 0 || fstat(exe, &st) != 0)
        return 12;
    /* The window: reserved, then released, so that only hints ask for it. */
    char *window = mmap(NULL, 2 * SLOTS * SLOT, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (window == MAP_FAILED || munmap(window, 2 * SLOTS * SLOT) != 0)
        return 13;
    char *anon = NULL, *file = NULL;
    size_t anon_len = 0;
    volatile char sink = 0;
    for (uint64_t pass = 1;; pass++) {
        for (size_t h = 0; h < hot; h++)
            touch(buf + h * (pages / hot) * PAGE, pass);
        uint64_t elapsed = now_ns() - start;
        for (; cold_done < elapsed / 1000 * cold_per_s / 1000000; cold_done++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            touch(buf + seed % pages * PAGE, pass);
        }
        if (churn && churned < elapsed / 20000000) {
            churned++;
            size_t len = (1 + churned % 17) * PAGE;
            char *slot = window + churned % SLOTS * SLOT;
            char *a = mmap(slot, len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            char *f = mmap(slot + SLOTS * SLOT, st.st_size, PROT_READ,
                           MAP_PRIVATE | MAP_FIXED_NOREPLACE, exe, 0);
            if (a == MAP_FAILED || f == MAP_FAILED)
                return 11;
            for (size_t o = 0; o < len; o += PAGE)
                touch(a + o, pass + o);
            for (off_t o = 0; o < st.st_size; o += PAGE)
                sink += f[o];
            if (anon) {
                munmap(anon, anon_len);
                munmap(file, st.st_size);
            }
            anon = a, anon_len = len, file = f;
        }
        nanosleep(&nap, NULL);
    }
}
