// SPDX-License-Identifier: GPL-2.0
/*
 * Layer 1: the L1 kernel's kvm_* tracepoints, from tracefs. Switched on
 * once, before the first test (trace_clock "mono", so its times are the records'
 * CLOCK_MONOTONIC), drained after it and written as "kt" records:
 *
 *   @VT1 <seq> <test> <t_ns> kt ts=<sec.usec> tid=<task's pid> cpu=<CPU> ev=<event> msg="<its text>"
 *
 * tid is the thread the event ran in (the trace's task column, comm-pid):
 * a vCPU's own events (kvm_entry, kvm_exit, kvm_userspace_exit, the timer's
 * host interrupt) run in its thread, whose id the VMM writes in the test's
 * "thread" record (vm.c), so the harness splits the events per vCPU. -1 when
 * the line has no task column it can read.
 *
 * Reads of "trace_pipe" return about a page at a time and consume what they
 * return: read until it has no more (EAGAIN, non-blocking). A kernel
 * without tracefs still runs; the boot record says kt=0.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vt.h"

#define TRACEFS "/sys/kernel/tracing"
/* A runaway test (an exit storm) would flood the console: keep the first ones. */
#define KT_MAX_LINES	VT_KT_LINES_MAX

/* group/event under events/: the guest's runs and exits, the timer */
static const char *const events[] = {
	"kvm/kvm_timer_update_irq", "kvm/kvm_exit", "kvm/kvm_entry", "kvm/kvm_userspace_exit",
	"kvm/kvm_irq_line", "kvm/kvm_vcpu_wakeup", "kvm/kvm_timer_hrtimer_expire",
};

static int put(const char *file, const char *val)
{
	char path[160];
	int fd, ret;

	snprintf(path, sizeof(path), TRACEFS "/%s", file);
	fd = open(path, O_WRONLY | O_TRUNC);
	if (fd < 0)
		return -1;
	ret = write(fd, val, strlen(val)) < 0 ? -1 : 0;
	close(fd);
	return ret;
}

bool kt_available(void)
{
	return access(TRACEFS "/events/kvm/kvm_exit/enable", W_OK) == 0;
}

/* irq_handler_entry is on (for the timers' own interrupts): its ktsum then always comes */
static bool irq_traced;

/*
 * Switched on once, before the first test: each of these writes costs the
 * kernel an RCU grace period or more (a new clock and a truncated "trace"
 * reset the buffer, a new filter waits for the old one's readers), about
 * 70 ms a test on a TCG vCPU. Between tests only tracing_on changes, and
 * kt_drain() empties the buffer by consuming it.
 */
static void kt_setup(void)
{
	char file[128];
	size_t i;

	put("tracing_on", "0");
	put("trace_clock", "mono");
	put("buffer_size_kb", "4096");
	put("trace", "");
	for (i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
		snprintf(file, sizeof(file), "events/%s/enable", events[i]);
		put(file, "1");
	}
	/*
	 * Which host interrupt ended a guest run: only the timers' own
	 * ("kvm guest vtimer", "kvm guest ptimer"), not the host's tick; a
	 * kernel that cannot filter does without the event.
	 */
	irq_traced = !put("events/irq/irq_handler_entry/filter", "name ~ \"kvm guest*\"") &&
		     !put("events/irq/irq_handler_entry/enable", "1");
}

void kt_start(void)
{
	static bool set_up;

	if (!kt_available())
		return;
	if (!set_up) {
		kt_setup();
		set_up = true;
	}
	put("tracing_on", "1");
}

/* Every event of a test, kept or not, by name: a storm past KT_MAX_LINES is still counted. */
struct kt_count {
	char name[32];
	unsigned long n;
};

#define KT_COUNTS	16
static struct kt_count counts[KT_COUNTS];
static unsigned long irq_exits;	/* kvm_exit "IRQ: ...": a host interrupt ended a guest run */

static void count_line(const char *line)
{
	const char *p = strchr(line, ']'), *ev, *end;
	size_t len, i;

	ev = p ? strstr(p, ": ") : NULL;
	if (!ev)
		return;
	ev += 2;
	end = strstr(ev, ": ");
	len = end ? (size_t)(end - ev) : strlen(ev);
	if (len >= sizeof(counts[0].name))
		return;
	if (end && len == 8 && !strncmp(ev, "kvm_exit", 8) && !strncmp(end + 2, "IRQ:", 4))
		irq_exits++;
	for (i = 0; i < KT_COUNTS && counts[i].name[0]; i++)
		if (strlen(counts[i].name) == len && !strncmp(counts[i].name, ev, len))
			break;
	if (i == KT_COUNTS)
		return;
	if (!counts[i].name[0])
		memcpy(counts[i].name, ev, len);
	counts[i].n++;
}

/*
 * "  init-23  [000] d....  0.339615: kvm_entry: PC: 0x40000000" becomes
 * "kt ts=0.339615 tid=23 cpu=0 ev=kvm_entry msg="PC: 0x40000000"": the
 * flags column says nothing here.
 */
static void emit_line(const char *test, char *line)
{
	char *ts, *ev, *msg, *p, *open, *dash;
	long tid = -1, cpu = -1;

	if (line[0] == '#' || !line[0])
		return;
	for (p = line; *p; p++)
		if (*p == '"')
			*p = '\'';
	p = strchr(line, ']');
	ev = p ? strstr(p, ": ") : NULL;
	if (!ev) {
		rec_emit(test, "kt", "raw=\"%s\"", line);
		return;
	}
	*ev = 0;
	for (open = p; open > line && *open != '['; open--)
		;
	if (*open == '[') {
		cpu = strtol(open + 1, NULL, 10);
		*open = 0;	/* the task column: comm-pid, the pid after the last '-' */
		dash = strrchr(line, '-');
		if (dash && dash[1] >= '0' && dash[1] <= '9')
			tid = strtol(dash + 1, NULL, 10);
	}
	ts = strrchr(p, ' ');
	ev += 2;
	msg = strstr(ev, ": ");
	if (msg) {
		*msg = 0;
		msg += 2;
	}
	rec_emit(test, "kt", "ts=%s tid=%ld cpu=%ld ev=%s msg=\"%s\"", ts ? ts + 1 : "?", tid, cpu,
		 ev, msg ? msg : "");
}

/* Stop tracing and write every buffered event as a record of test. */
void kt_drain(const char *test)
{
	char buf[4096], line[400];
	unsigned long lines = 0;
	size_t len = 0, i;
	ssize_t n;
	int fd;

	if (!kt_available())
		return;
	put("tracing_on", "0");
	/* a consuming read: what it returns leaves the buffer, which ends empty */
	fd = open(TRACEFS "/trace_pipe", O_RDONLY | O_NONBLOCK);
	if (fd < 0)
		return;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				line[len] = 0;
				if (line[0] != '#') {
					count_line(line);
					if (++lines <= KT_MAX_LINES)
						emit_line(test, line);
				}
				len = 0;
			} else if (len < sizeof(line) - 1) {
				line[len++] = buf[i];
			}
		}
	}
	close(fd);
	if (lines > KT_MAX_LINES)
		rec_emit(test, "ktdrop", "n=%lu kept=%d", lines - KT_MAX_LINES, KT_MAX_LINES);
	for (i = 0; i < KT_COUNTS && counts[i].name[0]; i++)
		rec_emit(test, "ktsum", "ev=%s n=%lu", counts[i].name, counts[i].n);
	rec_emit(test, "ktsum", "ev=kvm_exit_irq n=%lu", irq_exits);
	for (i = 0; irq_traced && i < KT_COUNTS; i++)
		if (!strcmp(counts[i].name, "irq_handler_entry"))
			break;
	if (irq_traced && i == KT_COUNTS)
		rec_emit(test, "ktsum", "ev=irq_handler_entry n=0");
	memset(counts, 0, sizeof(counts));
	irq_exits = 0;
}
