/*
 * A program that uses userfaultfd itself, after a tracker may have attached: maps TRACKED and
 * ELSEWHERE (2 pages each), prints their addresses and waits for a byte on stdin; then makes
 * a userfaultfd and registers each region for missing-page faults, printing "TRACKED errno"
 * and "ELSEWHERE errno" (0 when the registration worked), and exits 1.5 s later.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int reg(int uffd, void *addr)
{
	struct uffdio_register r = { .range = { (unsigned long)addr, 2 * 4096 },
				     .mode = UFFDIO_REGISTER_MODE_MISSING };
	return ioctl(uffd, UFFDIO_REGISTER, &r) ? errno : 0;
}

int main(void)
{
	void *tracked = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *elsewhere = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (tracked == MAP_FAILED || elsewhere == MAP_FAILED)
		return 2;
	printf("%p %p\n", tracked, elsewhere);
	fflush(stdout);
	char go;
	if (read(0, &go, 1) != 1)
		return 3;
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
	struct uffdio_api api = { .api = UFFD_API };
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api))
		return 4;
	printf("TRACKED %d\nELSEWHERE %d\n", reg(uffd, tracked), reg(uffd, elsewhere));
	fflush(stdout);
	usleep(1500000); /* long enough for a tracker's once-a-second look at its fds */
	return 0;
}
