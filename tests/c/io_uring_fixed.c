/* A target whose memory the kernel writes without a page fault: a buffer registered with
 * io_uring (IORING_REGISTER_BUFFERS pins its pages), filled by IORING_OP_READ_FIXED from a file.
 * Raw syscalls, no liburing.
 *
 * usage: io_uring_fixed FILE PAGES [late]
 * Maps and populates PAGES pages, registers them at once (or, with `late`, after the first
 * byte on stdin), then for every further byte on stdin: 'r' reads PAGES pages of FILE into the
 * buffer through the ring, 'w' writes every page from the CPU, 'c' closes the ring's fd. Each step is acknowledged on
 * stdout with one line. Exits at stdin's end.
 *   stdout: "buffer 0x<addr> <pages>", then "registered", "read <bytes>", "wrote", "closed"
 *   exit 3 with "io_uring: <errno text>" on stderr when the kernel refuses io_uring.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static int ring_fd = -1;
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(1);
}

static void setup_ring(void *buf, size_t len) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    ring_fd = syscall(SYS_io_uring_setup, 4, &p);
    if (ring_fd < 0) {
        fprintf(stderr, "io_uring: %s\n", strerror(errno));
        exit(3);
    }
    size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP)
        sq_size = cq_size = sq_size > cq_size ? sq_size : cq_size;
    char *sq = mmap(NULL, sq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd,
                    IORING_OFF_SQ_RING);
    if (sq == MAP_FAILED) die("mmap sq");
    char *cq = sq;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        cq = mmap(NULL, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd,
                  IORING_OFF_CQ_RING);
        if (cq == MAP_FAILED) die("mmap cq");
    }
    sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) die("mmap sqes");
    sq_tail = (unsigned *)(sq + p.sq_off.tail);
    sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    sq_array = (unsigned *)(sq + p.sq_off.array);
    cq_head = (unsigned *)(cq + p.cq_off.head);
    cq_tail = (unsigned *)(cq + p.cq_off.tail);
    cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    struct iovec iov = {buf, len};
    if (syscall(SYS_io_uring_register, ring_fd, IORING_REGISTER_BUFFERS, &iov, 1) < 0) {
        fprintf(stderr, "io_uring: IORING_REGISTER_BUFFERS: %s\n", strerror(errno));
        exit(3);
    }
}

static int read_fixed(int fd, void *buf, size_t len) {
    unsigned tail = *sq_tail, idx = tail & *sq_mask;
    struct io_uring_sqe *sqe = &sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_READ_FIXED;
    sqe->fd = fd;
    sqe->addr = (unsigned long)buf;
    sqe->len = len;
    sqe->off = 0;
    sqe->buf_index = 0;
    sq_array[idx] = idx;
    atomic_store_explicit((_Atomic unsigned *)sq_tail, tail + 1, memory_order_release);
    if (syscall(SYS_io_uring_enter, ring_fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
        die("io_uring_enter");
    unsigned head = *cq_head;
    while (head == atomic_load_explicit((_Atomic unsigned *)cq_tail, memory_order_acquire))
        ;
    int res = cqes[head & *cq_mask].res;
    atomic_store_explicit((_Atomic unsigned *)cq_head, head + 1, memory_order_release);
    return res;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FILE PAGES [late]\n", argv[0]);
        return 2;
    }
    int file = open(argv[1], O_RDONLY);
    if (file < 0) die(argv[1]);
    size_t page = sysconf(_SC_PAGESIZE), pages = strtoul(argv[2], NULL, 0), len = pages * page;
    int late = argc > 3 && strcmp(argv[3], "late") == 0;
    char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) die("mmap buffer");
    memset(buf, 1, len);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!late) setup_ring(buf, len);
    printf("buffer %p %zu\n", (void *)buf, pages);
    char c;
    while (read(0, &c, 1) == 1) {
        if (c == 'g' && ring_fd < 0) {
            setup_ring(buf, len);
            printf("registered\n");
        } else if (c == 'r') {
            printf("read %d\n", read_fixed(file, buf, len));
        } else if (c == 'c') {
            /* The ring lives on through its mappings, its buffers still pinned. */
            close(ring_fd);
            printf("closed\n");
        } else if (c == 'w') {
            for (size_t i = 0; i < len; i += page) buf[i]++;
            printf("wrote\n");
        }
    }
    return 0;
}
