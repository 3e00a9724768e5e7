// SPDX-License-Identifier: GPL-2.0
/*
 * vtvmm as /init: mount what the suite needs, check which ABI the kernel
 * speaks (probe.c, one "abi" record), run every test of the suite manifest
 * in its own child with a watchdog, report, power off.
 *
 *   vtvmm [manifest]     (default /suite/suite.conf; as PID 1 it powers off)
 *
 * Manifest lines (written by harness/build/initramfs.py):
 *   abi <upstream|v4|v5|v6>
 *   policy <every-exit|eintr-only>
 *   test <name> <image> vcpus=<n> timeout_ms=<ms> [key=value ...]
 *   qemu <name> timeout_ms=<ms> -- <program> <args...>   (see qemu_vmm.c)
 *
 * where the optional keys (the spec's vmm: mapping) are
 *   inject=<now|late|never> inject_delay_ms=<ms> alarm_us=<us>
 *   save_restore=<0|1> downtime_ms=<ms>
 * An unknown key or a bad value rejects the line.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vt.h"

#define STOP_GRACE_MS	5000
/* the ABI probe's phases end by themselves in ~3 s; this bounds a wedged one */
#define PROBE_WATCHDOG_MS	10000

/* "records live": tests write records as they happen (for faults injected mid-test). */
static bool live_records;

static const char *const status_names[] = {
	[VT_ST_OK] = "ok",
	[VT_ST_GUEST_FAIL] = "guest-fail",
	[VT_ST_GUEST_TIMEOUT] = "guest-timeout",
	[VT_ST_WATCHDOG] = "watchdog",
	[VT_ST_VMM_ERROR] = "vmm-error",
	[VT_ST_STORM] = "storm",
};

static void setup_pid1(void)
{
	int fd;

	mkdir("/dev", 0755);
	mkdir("/proc", 0755);
	mkdir("/sys", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL);
	fd = open("/dev/console", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

/*
 * The kernel modules the initramfs brings (a prebuilt kernel's records-port
 * drivers), loaded in the order of their names. One that fails is said on
 * the console and skipped: the records then stay on the console.
 */
static void load_modules(void)
{
	struct dirent **names;
	char path[300];
	int i, n = scandir("/modules", &names, NULL, by_name);

	for (i = 0; i < n; i++) {
		int fd;

		if (names[i]->d_name[0] == '.')
			goto next;
		snprintf(path, sizeof(path), "/modules/%s", names[i]->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) < 0)
			fprintf(stderr, "vtvmm: load %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
next:
		free(names[i]);
	}
	if (n >= 0)
		free(names);
}

/* Wait for pid up to ms; returns true if it ended (status in *ws). */
static bool wait_for(pid_t pid, unsigned int ms, int *ws)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000;
	sigset_t chld;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	for (;;) {
		pid_t w = waitpid(pid, ws, WNOHANG);
		uint64_t now = now_ns();
		struct timespec left;

		if (w == pid || (w < 0 && errno != EINTR))
			return true;
		if (now >= end)
			return false;
		left.tv_sec = (end - now) / 1000000000;
		left.tv_nsec = (end - now) % 1000000000;
		/* SIGCHLD is blocked in /init: this sleeps until a child ends */
		sigtimedwait(&chld, NULL, &left);
	}
}

/* The blocked SIGCHLD that wait_for() waits on is not for the children. */
void unblock_sigchld(void)
{
	sigset_t chld;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_UNBLOCK, &chld, NULL);
}

/*
 * Run one test in a child. The watchdog first asks the child to stop
 * (SIGUSR1: it leaves KVM_RUN and writes its records), then kills it.
 */
static void run_one(struct vt_test *t)
{
	char end[96];
	int ws = 0;
	pid_t pid;

	fflush(stdout);
	kt_start();
	pid = fork();
	if (pid == 0) {
		unblock_sigchld();
		rec_set_buffered(!live_records);
		int st = run_test(t);

		rec_flush();
		_exit(st);
	}
	if (pid < 0) {
		snprintf(end, sizeof(end), "status=vmm-error msg=\"fork: %s\"", strerror(errno));
	} else if (!wait_for(pid, t->timeout_ms, &ws)) {
		kill(pid, SIGUSR1);
		if (!wait_for(pid, STOP_GRACE_MS, &ws)) {
			kill(pid, SIGKILL);
			waitpid(pid, &ws, 0);
		}
		snprintf(end, sizeof(end), "status=watchdog timeout_ms=%u", t->timeout_ms);
	} else if (WIFSIGNALED(ws)) {
		snprintf(end, sizeof(end), "status=vmm-crash signal=%d", WTERMSIG(ws));
	} else {
		snprintf(end, sizeof(end), "status=%s",
			 WEXITSTATUS(ws) < (int)ARRAY_SIZE(status_names) ?
			 status_names[WEXITSTATUS(ws)] : "vmm-error");
	}
	kt_drain(t->name);
	rec_emit(t->name, "end", "%s", end);
}

/*
 * The ABI self-check (probe.c) in a child of its own, bounded: it writes
 * the "abi" record; a probe that hangs or crashes gets one from here.
 */
static void run_probe(void)
{
	int ws = 0;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		unblock_sigchld();
		_exit(abi_probe());
	}
	if (pid < 0) {
		rec_emit("-", "abi", "v=1 status=error msg=\"fork: %s\"", strerror(errno));
	} else if (!wait_for(pid, PROBE_WATCHDOG_MS, &ws)) {
		kill(pid, SIGKILL);
		waitpid(pid, &ws, 0);
		rec_emit("-", "abi", "v=1 status=error msg=\"the probe did not end within %d ms\"",
			 PROBE_WATCHDOG_MS);
	} else if (WIFSIGNALED(ws)) {
		rec_emit("-", "abi", "v=1 status=error msg=\"the probe crashed: signal %d\"",
			 WTERMSIG(ws));
	}
}

const char *const inject_names[] = {
	[INJECT_NOW] = "now",
	[INJECT_LATE] = "late",
	[INJECT_NEVER] = "never",
};

static int parse_uint(const char *s, unsigned int max, unsigned int *out)
{
	unsigned long v;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return -1;
	*out = v;
	return 0;
}

/* The spec's vmm: options, as the manifest spells them (key=value). */
enum vt_opt_kind { OPT_INT, OPT_UINT, OPT_BOOL, OPT_INJECT };

struct vt_option {
	const char *key;
	size_t off;		/* its field in struct vt_test */
	enum vt_opt_kind kind;
	unsigned int min, max;
};

#define VT_OPT(field, kind, min, max) \
	{ #field, offsetof(struct vt_test, field), kind, min, max }

static const struct vt_option options[] = {
	VT_OPT(vcpus, OPT_INT, 1, VT_MAX_VCPUS),
	VT_OPT(timeout_ms, OPT_UINT, 0, VT_TIMEOUT_MS_MAX),
	VT_OPT(inject, OPT_INJECT, 0, INJECT_NEVER),
	VT_OPT(inject_delay_ms, OPT_UINT, 0, VT_INJECT_DELAY_MS_MAX),
	VT_OPT(alarm_us, OPT_UINT, 0, VT_ALARM_US_MAX),
	VT_OPT(save_restore, OPT_BOOL, 0, 1),
	VT_OPT(downtime_ms, OPT_UINT, 0, VT_DOWNTIME_MS_MAX),
	VT_OPT(crash_after_exits, OPT_UINT, 0, VT_FAULT_COUNT_MAX),
	VT_OPT(garble_record, OPT_UINT, 0, VT_FAULT_COUNT_MAX),
};

/* An enum option's value by name (inject=late). */
static int parse_name(const char *s, const char *const *names, unsigned int max,
		      unsigned int *out)
{
	unsigned int i;

	for (i = 0; i <= max; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return 0;
		}
	}
	return -1;
}

static int parse_option(const char *key, const char *val, struct vt_test *t)
{
	const struct vt_option *o;
	unsigned int u;
	char *field;

	for (o = options; o < options + ARRAY_SIZE(options); o++)
		if (!strcmp(key, o->key))
			break;
	if (o == options + ARRAY_SIZE(options))
		return -1;
	if (o->kind == OPT_INJECT ? parse_name(val, inject_names, o->max, &u) :
				    parse_uint(val, o->max, &u))
		return -1;
	if (u < o->min)
		return -1;
	field = (char *)t + o->off;
	switch (o->kind) {
	case OPT_INT:
		*(int *)field = u;
		break;
	case OPT_UINT:
		*(unsigned int *)field = u;
		break;
	case OPT_BOOL:
		*(bool *)field = u;
		break;
	case OPT_INJECT:
		*(enum vt_inject *)field = u;
		break;
	}
	return 0;
}

/* Parse a manifest test line; on error, *bad names the offending token. */
static int parse_test(char *line, struct vt_test *t, const struct vt_abi *abi,
		      enum vt_policy policy, char *bad, size_t len)
{
	char *tok, *eq;
	int i = 0;

	memset(t, 0, sizeof(*t));
	t->vcpus = 1;
	t->timeout_ms = 20000;
	t->abi = abi;
	t->policy = policy;
	for (tok = strtok(line, " \t\n"); tok; tok = strtok(NULL, " \t\n"), i++) {
		if (i == 0)	/* "test" */
			continue;
		if (i == 1 || i == 2) {
			size_t max = i == 1 ? VT_NAME_MAX : VT_IMAGE_MAX;

			if (strlen(tok) > max) {
				snprintf(bad, len, "%s longer than %zu characters",
					 i == 1 ? "name" : "image", max);
				return -1;
			}
			strcpy(i == 1 ? t->name : t->image, tok);
			continue;
		}
		eq = strchr(tok, '=');
		snprintf(bad, len, "%s", tok);
		if (!eq)
			return -1;
		*eq = '\0';
		if (parse_option(tok, eq + 1, t) < 0)
			return -1;
	}
	if (i < 3) {
		snprintf(bad, len, "%s", "test <name> <image>");
		return -1;
	}
	if ((t->inject == INJECT_LATE) != (t->inject_delay_ms > 0)) {
		snprintf(bad, len, "%s", "inject_delay_ms needs inject=late");
		return -1;
	}
	if (t->downtime_ms && !t->save_restore) {
		snprintf(bad, len, "%s", "downtime_ms needs save_restore=1");
		return -1;
	}
	return 0;
}

static int run_suite(const char *path, const char *channel)
{
	const struct vt_abi *abi = abi_find("upstream");
	enum vt_policy policy = POLICY_EVERY_EXIT;
	char line[VT_LINE_MAX], word[64], bad[64];
	struct utsname u;
	struct vt_test t;
	int ntests = 0, lineno = 0, kvm;
	FILE *f;

	uname(&u);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	rec_emit("-", "boot", "release=%s frq=%llu kt=%d kvm=%d user_irq=%d ch=%s", u.release,
		 (unsigned long long)read_cntfrq(), kt_available(), kvm >= 0,
		 kvm >= 0 ? ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_ARM_USER_IRQ) : -1,
		 channel);
	if (kvm >= 0)
		close(kvm);
	run_probe();
	f = fopen(path, "r");
	if (!f) {
		rec_emit("-", "error", "msg=\"%s: %s\"", path, strerror(errno));
		return 1;
	}
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			rec_emit("-", "error", "line=%d msg=\"manifest line longer than %d characters\"",
				 lineno, VT_LINE_MAX - 1);
			while (fgets(line, sizeof(line), f) && !strchr(line, '\n'))
				;
			continue;
		}
		if (sscanf(line, "abi %63s", word) == 1) {
			abi = abi_find(word);
			if (!abi) {
				rec_emit("-", "error", "msg=\"unknown abi %s\"", word);
				return 1;
			}
		} else if (!strncmp(line, "records live", 12)) {
			live_records = true;
		} else if (sscanf(line, "policy %63s", word) == 1) {
			policy = strcmp(word, "eintr-only") ? POLICY_EVERY_EXIT :
				 POLICY_EINTR_ONLY;
		} else if (!strncmp(line, "test ", 5)) {
			if (parse_test(line, &t, abi, policy, bad, sizeof(bad)) < 0) {
				rec_emit("-", "error", "line=%d msg=\"bad manifest line: %s\"",
					 lineno, bad);
				continue;
			}
			run_one(&t);
			ntests++;
		} else if (!strncmp(line, "qemu ", 5)) {
			run_qemu(line);
			ntests++;
		}
	}
	fclose(f);
	rec_emit("-", "done", "tests=%d", ntests);
	return 0;
}

int main(int argc, char **argv)
{
	bool pid1 = getpid() == 1;
	sigset_t chld;
	int ret;

	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	if (pid1) {
		setup_pid1();
		load_modules();
	}
	rec_init();
	/*
	 * As PID 1, argv holds the kernel command line's words it did not know (a
	 * "nokaslr" the early boot code took): the manifest is always our own.
	 */
	ret = run_suite(argc > 1 && !pid1 ? argv[1] : "/suite/suite.conf", rec_open_channel());
	if (!pid1)
		return ret;
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}
