// SPDX-License-Identifier: GPL-2.0
/*
 * vtvmm as /init: mount what the suite needs, run every test of the suite
 * manifest in its own child with a watchdog, report, power off.
 *
 *   vtvmm [manifest]     (default /suite/suite.conf; as PID 1 it powers off)
 *
 * Manifest lines (written by harness/initramfs.py):
 *   abi <upstream|v4|v5|v6>
 *   policy <every-exit|eintr-only>
 *   test <name> <image> vcpus=<n> timeout_ms=<ms>
 */
#define _GNU_SOURCE
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
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vt.h"

#define STOP_GRACE_MS	5000

static const char *const status_names[] = {
	[VT_ST_OK] = "ok",
	[VT_ST_GUEST_FAIL] = "guest-fail",
	[VT_ST_GUEST_TIMEOUT] = "guest-timeout",
	[VT_ST_WATCHDOG] = "watchdog",
	[VT_ST_VMM_ERROR] = "vmm-error",
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

/* Wait for pid up to ms; returns true if it ended (status in *ws). */
static bool wait_for(pid_t pid, unsigned int ms, int *ws)
{
	uint64_t end = now_ns() + (uint64_t)ms * 1000000;

	for (;;) {
		pid_t w = waitpid(pid, ws, WNOHANG);

		if (w == pid)
			return true;
		if (w < 0 && errno != EINTR)
			return true;
		if (now_ns() >= end)
			return false;
		usleep(2000);
	}
}

/*
 * Run one test in a child. The watchdog first asks the child to stop
 * (SIGUSR1: it leaves KVM_RUN and writes its records), then kills it.
 */
static void run_one(struct vt_test *t)
{
	const char *status;
	int ws = 0;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		rec_set_buffered(true);
		int st = run_test(t);

		rec_flush();
		_exit(st);
	}
	if (pid < 0) {
		rec_emit(t->name, "end", "status=vmm-error msg=\"fork: %s\"",
			 strerror(errno));
		return;
	}
	if (!wait_for(pid, t->timeout_ms, &ws)) {
		kill(pid, SIGUSR1);
		if (!wait_for(pid, STOP_GRACE_MS, &ws)) {
			kill(pid, SIGKILL);
			waitpid(pid, &ws, 0);
		}
		rec_emit(t->name, "end", "status=watchdog timeout_ms=%u", t->timeout_ms);
		return;
	}
	if (WIFSIGNALED(ws)) {
		rec_emit(t->name, "end", "status=vmm-crash signal=%d", WTERMSIG(ws));
		return;
	}
	status = WEXITSTATUS(ws) < (int)(sizeof(status_names) / sizeof(status_names[0])) ?
		 status_names[WEXITSTATUS(ws)] : "vmm-error";
	rec_emit(t->name, "end", "status=%s", status);
}

static int parse_test(char *line, struct vt_test *t, const struct vt_abi *abi,
		      enum vt_policy policy)
{
	char *tok;

	memset(t, 0, sizeof(*t));
	t->vcpus = 1;
	t->timeout_ms = 20000;
	t->abi = abi;
	t->policy = policy;
	if (sscanf(line, "test %63s %255s", t->name, t->image) != 2)
		return -1;
	for (tok = strtok(line, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
		if (!strncmp(tok, "vcpus=", 6))
			t->vcpus = atoi(tok + 6);
		else if (!strncmp(tok, "timeout_ms=", 11))
			t->timeout_ms = atoi(tok + 11);
	}
	return t->vcpus >= 1 && t->vcpus <= VT_MAX_VCPUS ? 0 : -1;
}

static int run_suite(const char *path)
{
	const struct vt_abi *abi = abi_find("upstream");
	enum vt_policy policy = POLICY_EVERY_EXIT;
	char line[512], word[64];
	struct utsname u;
	struct vt_test t;
	int ntests = 0, kvm;
	FILE *f;

	uname(&u);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	rec_emit("-", "boot", "release=%s kvm=%d user_irq=%d", u.release, kvm >= 0,
		 kvm >= 0 ? ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_ARM_USER_IRQ) : -1);
	if (kvm >= 0)
		close(kvm);
	f = fopen(path, "r");
	if (!f) {
		rec_emit("-", "error", "msg=\"%s: %s\"", path, strerror(errno));
		return 1;
	}
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "abi %63s", word) == 1) {
			abi = abi_find(word);
			if (!abi) {
				rec_emit("-", "error", "msg=\"unknown abi %s\"", word);
				return 1;
			}
		} else if (sscanf(line, "policy %63s", word) == 1) {
			policy = strcmp(word, "eintr-only") ? POLICY_EVERY_EXIT :
				 POLICY_EINTR_ONLY;
		} else if (!strncmp(line, "test ", 5)) {
			if (parse_test(line, &t, abi, policy) < 0) {
				rec_emit("-", "error", "msg=\"bad manifest line\"");
				continue;
			}
			run_one(&t);
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
	int ret;

	if (pid1)
		setup_pid1();
	rec_init();
	ret = run_suite(argc > 1 ? argv[1] : "/suite/suite.conf");
	if (!pid1)
		return ret;
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}
