// SPDX-License-Identifier: GPL-2.0
/*
 * A second VMM under test: QEMU itself (kernel-irqchip=off, so it follows
 * the timer line through run->s.regs.device_irq_level into its emulated
 * GIC), run as one test of the suite with the same watchdog.
 *
 * Manifest line (written by harness/runs/vmms/qemu_vmm.py):
 *   qemu <name> timeout_ms=<ms> -- <program> <args...>
 *
 * Records: begin (vmm=qemu), one "out" record per line the program writes
 * on stdout or stderr (the guest's serial console among them), the L1
 * kernel's kvm tracepoints as "kt" records (tracefs.c), end with
 * status=ok (exit status 0), status=qemu-exit code=<n>, status=vmm-crash
 * signal=<n> or status=watchdog; wall_ms is fork to exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vt.h"

#define QEMU_MAX_ARGS	64
#define QEMU_LINE_MAX	300	/* longer output lines are cut (a record is 512 bytes) */
#define QEMU_GRACE_MS	5000	/* SIGTERM to SIGKILL */

struct qemu_out {
	const char *test;
	char line[QEMU_LINE_MAX + 1];
	size_t len;
};

/* One finished output line as a record; quotes and control bytes are replaced. */
static void out_flush(struct qemu_out *o)
{
	size_t i;

	for (i = 0; i < o->len; i++)
		if (o->line[i] == '"')
			o->line[i] = '\'';
		else if ((unsigned char)o->line[i] < 0x20 || o->line[i] == 0x7f)
			o->line[i] = '?';
	o->line[o->len] = '\0';
	rec_emit(o->test, "out", "line=\"%s\"", o->line);
	o->len = 0;
}

static void out_feed(struct qemu_out *o, const char *buf, size_t n)
{
	for (; n; buf++, n--) {
		if (*buf == '\n')
			out_flush(o);
		else if (*buf != '\r' && o->len < QEMU_LINE_MAX)
			o->line[o->len++] = *buf;
	}
}

/* Read what the child wrote, for up to ms; returns false at EOF. */
static bool out_read(struct qemu_out *o, int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char buf[1024];
	ssize_t n;

	if (poll(&p, 1, ms) <= 0)
		return true;
	n = read(fd, buf, sizeof(buf));
	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (n == 0)
		return false;
	out_feed(o, buf, n);
	return true;
}

static pid_t spawn(char **argv, int out)
{
	static char *const envp[] = { "PATH=/usr/bin:/bin", "HOME=/", NULL };
	pid_t pid = fork();
	int null;

	if (pid)
		return pid;
	unblock_sigchld();
	null = open("/dev/null", O_RDONLY);
	if (null >= 0)
		dup2(null, STDIN_FILENO);
	dup2(out, STDOUT_FILENO);
	dup2(out, STDERR_FILENO);
	setsid();
	execve(argv[0], argv, envp);
	dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* Parse "qemu <name> timeout_ms=<ms> -- <argv...>" in place. */
static int parse_line(char *line, char **name, unsigned int *timeout_ms, char **argv)
{
	char *tok, *end;
	int argc = 0, i = 0;
	bool args = false;

	*timeout_ms = 20000;
	for (tok = strtok(line, " \t\n"); tok; tok = strtok(NULL, " \t\n"), i++) {
		if (args) {
			if (argc == QEMU_MAX_ARGS)
				return -1;
			argv[argc++] = tok;
		} else if (i == 1) {
			*name = tok;
		} else if (!strcmp(tok, "--")) {
			args = true;
		} else if (!strncmp(tok, "timeout_ms=", 11)) {
			*timeout_ms = strtoul(tok + 11, &end, 10);
			if (*end || !*timeout_ms)
				return -1;
		} else if (i) {
			return -1;
		}
	}
	argv[argc] = NULL;
	return i >= 2 && argc ? 0 : -1;
}

static uint64_t ms_since(uint64_t t)
{
	return (now_ns() - t) / 1000000;
}

void run_qemu(char *line)
{
	char *argv[QEMU_MAX_ARGS + 1], *name = "-";
	struct qemu_out o = { 0 };
	unsigned int timeout_ms;
	bool live = true, watchdog = false;
	uint64_t start, until, wall_ms;
	int fds[2], ws = 0;
	pid_t pid;

	if (parse_line(line, &name, &timeout_ms, argv) < 0) {
		rec_emit(name, "error", "msg=\"bad manifest line: qemu\"");
		return;
	}
	o.test = name;
	rec_emit(name, "begin", "vmm=qemu timeout_ms=%u prog=%s", timeout_ms, argv[0]);
	if (pipe2(fds, O_CLOEXEC) < 0) {
		rec_emit(name, "end", "status=vmm-error msg=\"pipe: %s\"", strerror(errno));
		return;
	}
	kt_start();
	start = now_ns();
	pid = spawn(argv, fds[1]);
	close(fds[1]);
	if (pid < 0) {
		close(fds[0]);
		rec_emit(name, "end", "status=vmm-error msg=\"fork: %s\"", strerror(errno));
		return;
	}
	/* follow the output until the child ends; the watchdog: SIGTERM, then SIGKILL */
	until = start + (uint64_t)timeout_ms * 1000000;
	while (waitpid(pid, &ws, WNOHANG) == 0) {
		if (now_ns() >= until) {
			if (watchdog) {
				kill(pid, SIGKILL);
				waitpid(pid, &ws, 0);
				break;
			}
			watchdog = true;
			kill(pid, SIGTERM);
			until = now_ns() + (uint64_t)QEMU_GRACE_MS * 1000000;
		}
		if (live)
			live = out_read(&o, fds[0], 20);
		else
			usleep(2000);
	}
	wall_ms = ms_since(start);
	/* what is left in the pipe (bounded: a grandchild could hold it open) */
	until = now_ns() + 2000ULL * 1000000;
	while (live && now_ns() < until)
		live = out_read(&o, fds[0], 100);
	if (o.len)
		out_flush(&o);
	close(fds[0]);
	kt_drain(name);
	if (watchdog)
		rec_emit(name, "end", "status=watchdog timeout_ms=%u wall_ms=%llu", timeout_ms,
			 (unsigned long long)wall_ms);
	else if (WIFSIGNALED(ws))
		rec_emit(name, "end", "status=vmm-crash signal=%d wall_ms=%llu", WTERMSIG(ws),
			 (unsigned long long)wall_ms);
	else
		rec_emit(name, "end", "status=%s code=%d wall_ms=%llu",
			 WEXITSTATUS(ws) ? "qemu-exit" : "ok", WEXITSTATUS(ws),
			 (unsigned long long)wall_ms);
}
