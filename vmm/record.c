// SPDX-License-Identifier: GPL-2.0
/*
 * Trace records, one line each, on the records channel: the virtio-serial
 * port named vt.records when the machine has one (rec_open_channel()), else
 * the console:
 *
 *   @VT1 <seq> <test> <t_ns> <kind> key=value ... *<crc32>
 *
 * seq counts every record of the boot (shared across the fork()ed test
 * children), t_ns is CLOCK_MONOTONIC, crc32 (IEEE) covers everything
 * before " *". The host parser (harness/traces/records.py) checks both, so a lost
 * or mangled line is detected, never silently skipped.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "vt.h"

#define REC_VERSION	"@VT1"
#define BUF_SIZE	VT_REC_BUFFER
#define PORT_NAME	"vt.records"
#define PORTS_DIR	"/sys/class/virtio-ports"
/* how long /init waits for the host to name the port (virtio_console names it from a workqueue) */
#define PORT_WAIT_MS	500

static int rec_fd = STDOUT_FILENO;
static const char *channel = "console";

static uint64_t *seq;			/* shared with the test children */
static char *buf;
static size_t used;
static bool buffered;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t crc_table[256];
static unsigned int garble_at, emitted;	/* fault injection: see rec_fault_garble() */

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static uint32_t crc32(const char *p, size_t n)
{
	uint32_t c = 0xffffffff;

	while (n--)
		c = crc_table[(c ^ (unsigned char)*p++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffff;
}

void rec_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		for (c = i, j = 0; j < 8; j++)
			c = c & 1 ? 0xedb88320 ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
	seq = mmap(NULL, sizeof(*seq), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (seq == MAP_FAILED) {
		perror("vtvmm: mmap");
		exit(1);
	}
	buf = malloc(BUF_SIZE);
	if (!buf) {
		perror("vtvmm: malloc");
		exit(1);
	}
}

/* The port of ours among the virtio ports: its /dev name in dev (0 if none named yet). */
static int find_port(char *dev, size_t size)
{
	char path[300], name[32];
	struct dirent *d;
	int found = 0;
	DIR *dir = opendir(PORTS_DIR);

	if (!dir)
		return -1;	/* no virtio console driver: no port will come */
	while (!found && (d = readdir(dir))) {
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), PORTS_DIR "/%s/name", d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f) && !strncmp(name, PORT_NAME "\n", sizeof(PORT_NAME))) {
			snprintf(dev, size, "/dev/%s", d->d_name);
			found = 1;
		}
		fclose(f);
	}
	closedir(dir);
	return found;
}

/*
 * Records to the vt.records port if the machine has one. The driver is there
 * at /init, but the host names its ports a moment later: wait for that
 * (bounded). Returns the channel's name, for the boot record.
 */
const char *rec_open_channel(void)
{
	uint64_t end = now_ns() + PORT_WAIT_MS * 1000000ULL;
	struct timespec tick = { 0, 5000000 };
	char dev[300];
	int found, fd;

	while (!(found = find_port(dev, sizeof(dev))) && now_ns() < end)
		nanosleep(&tick, NULL);
	if (found <= 0)
		return channel;
	fd = open(dev, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "vtvmm: %s: %s: records stay on the console\n", dev,
			strerror(errno));
		return channel;
	}
	rec_fd = fd;
	channel = "port";
	printf("vtvmm: records on %s (" PORT_NAME ")\n", dev);
	fflush(stdout);
	return channel;
}

static void write_all(const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(rec_fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			fprintf(stderr, "vtvmm: records write of %zu bytes: %s\n", n,
				k < 0 ? strerror(errno) : "nothing written");
			return;
		}
		p += k;
		n -= k;
	}
}

/* Unlocked: callers hold the lock. */
static void flush_locked(void)
{
	write_all(buf, used);
	used = 0;
}

void rec_flush(void)
{
	pthread_mutex_lock(&lock);
	flush_locked();
	pthread_mutex_unlock(&lock);
}

/*
 * A test child buffers its records and writes them when it ends, so the
 * console's cost does not stretch the time between exits.
 */
void rec_set_buffered(bool on)
{
	rec_flush();
	buffered = on;
}

/*
 * Fault injection for the harness's own tests: from now on, the n-th record
 * is mangled after its checksum was computed and the one after it is lost,
 * as a noisy serial line would do.
 */
void rec_fault_garble(unsigned int n)
{
	garble_at = n;
	emitted = 0;
}

void rec_emit(const char *test, const char *kind, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	int n, m;

	pthread_mutex_lock(&lock);
	n = snprintf(line, sizeof(line), REC_VERSION " %llu %s %llu %s ",
		     (unsigned long long)__atomic_fetch_add(seq, 1, __ATOMIC_SEQ_CST),
		     test, (unsigned long long)now_ns(), kind);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n - 16, fmt, ap);
	va_end(ap);
	if (m > (int)sizeof(line) - n - 17)
		m = sizeof(line) - n - 17;
	n += m;
	while (n > 0 && line[n - 1] == ' ')
		n--;
	n += snprintf(line + n, sizeof(line) - n, " *%08x\n", crc32(line, n));
	if (garble_at && ++emitted == garble_at + 1) {
		pthread_mutex_unlock(&lock);
		return;
	}
	if (garble_at && emitted == garble_at)
		line[6] ^= 0x01;	/* a flipped bit in the sequence number */
	if (used + n > BUF_SIZE)
		flush_locked();
	memcpy(buf + used, line, n);
	used += n;
	if (!buffered)
		flush_locked();
	pthread_mutex_unlock(&lock);
}
