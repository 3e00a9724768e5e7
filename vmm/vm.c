// SPDX-License-Identifier: GPL-2.0
/*
 * One guest test in one VM with no in-kernel irqchip: load the image, run
 * each vCPU in its own thread, follow the timer line through the ABI,
 * drive the vCPU's IRQ line with KVM_IRQ_LINE and record every exit.
 * The spec's vmm: options bend that one loop: a late or no injection, a
 * periodic SIGALRM during KVM_RUN, a save/restore of the vtimer registers
 * when the guest asks for it.
 *
 * Runs in a child of the suite runner (init.c); SIGUSR1 from the runner's
 * watchdog stops it cleanly so its records still reach the console.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <asm/ptrace.h>

#include "vt.h"
#include "vt_ports.h"

#define VT_PORT_NAME(name, nr) [nr] = #name,
static const char *const port_names[] = { VT_PORTS(VT_PORT_NAME) };
#undef VT_PORT_NAME

volatile int vt_stop;

struct vm {
	const struct vt_test *t;
	int kvm, fd;
	int run_size;
	void *ram;
};

struct vcpu {
	struct vm *vm;
	int idx, fd;
	struct kvm_run *run;
	uint64_t level;		/* the timer bitmap as last read through the ABI */
	int line;		/* the IRQ line level we last drove */
	int status;		/* enum vt_status */
	uint64_t exits;
	bool held;		/* a rise read but not injected (late or never) */
	uint64_t held_since;	/* when it was read (ns) */
	bool save_req;		/* the guest asked for a save/restore */
	timer_t kick;		/* late injection: SIGALRM when the delay is over */
	timer_t alarm;		/* the spec's periodic SIGALRM */
	bool has_kick, has_alarm;
	/* exit storm detection (storming()) */
	uint64_t shown;		/* the level the last exit showed (~0: none yet) */
	uint64_t hist;		/* the ABI's history as of the last exit (v5) */
	uint64_t win_start;	/* the current 100 ms window */
	uint64_t win_idle;	/* exits in it that told user space nothing */
	uint64_t storm_start;	/* the first of the busy windows in a row */
	uint64_t storm_idle;	/* idle exits in those windows */
	unsigned int storm_windows;
};

#define STORM_WINDOW_NS	(100 * 1000000ULL)

/* Exit records without a guest report this test wrote, and those dropped (vt_limits.h). */
static uint64_t exit_records, exit_dropped;

static pthread_t threads[VT_MAX_VCPUS];
static int nthreads;

/* Stop the test: every vCPU thread leaves KVM_RUN (SIGUSR2) and ends. */
static void stop_vcpus(void)
{
	int i;

	vt_stop = 1;
	for (i = 0; i < nthreads; i++)
		pthread_kill(threads[i], SIGUSR2);
}

/* SIGALRMs this vCPU thread's handler took (normally they are eaten instead). */
static __thread volatile sig_atomic_t alarms_taken;

static uint64_t core_reg(size_t off)
{
	return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
	       (off / sizeof(uint32_t));
}

static int set_core(int fd, size_t off, uint64_t val)
{
	struct kvm_one_reg reg = { .id = core_reg(off), .addr = (uint64_t)&val };

	return ioctl(fd, KVM_SET_ONE_REG, &reg);
}

static int load_image(struct vm *vm)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(vm->t->image, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0)
		return -1;
	if (st.st_size > (off_t)(VT_RAM_SIZE - VT_MAX_VCPUS * VT_STACK_SIZE)) {
		errno = EFBIG;
		close(fd);
		return -1;
	}
	n = read(fd, vm->ram, st.st_size);
	close(fd);
	return n == st.st_size ? 0 : -1;
}

static int vm_create(struct vm *vm)
{
	struct kvm_userspace_memory_region mr = {
		.slot = 0,
		.guest_phys_addr = VT_RAM_BASE,
		.memory_size = VT_RAM_SIZE,
	};

	vm->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm < 0)
		return -1;
	if (ioctl(vm->kvm, KVM_CHECK_EXTENSION, KVM_CAP_ARM_USER_IRQ) <= 0) {
		errno = ENOSYS;
		return -1;
	}
	vm->fd = ioctl(vm->kvm, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		return -1;
	vm->run_size = ioctl(vm->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size < 0)
		return -1;
	vm->ram = mmap(NULL, VT_RAM_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vm->ram == MAP_FAILED || load_image(vm) < 0)
		return -1;
	mr.userspace_addr = (uint64_t)vm->ram;
	return ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &mr);
}

static int vcpu_create(struct vm *vm, struct vcpu *v)
{
	struct kvm_vcpu_init init;
	uint64_t pstate = PSR_MODE_EL1h | PSR_D_BIT | PSR_A_BIT | PSR_I_BIT |
			  PSR_F_BIT;

	v->fd = ioctl(vm->fd, KVM_CREATE_VCPU, v->idx);
	if (v->fd < 0)
		return -1;
	memset(&init, 0, sizeof(init));
	if (ioctl(vm->fd, KVM_ARM_PREFERRED_TARGET, &init) < 0 ||
	    ioctl(v->fd, KVM_ARM_VCPU_INIT, &init) < 0)
		return -1;
	v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->fd, 0);
	if (v->run == MAP_FAILED)
		return -1;
	if (set_core(v->fd, offsetof(struct kvm_regs, regs.pc), VT_RAM_BASE) < 0 ||
	    set_core(v->fd, offsetof(struct kvm_regs, regs.pstate), pstate) < 0 ||
	    set_core(v->fd, offsetof(struct kvm_regs, regs.regs[0]), v->idx) < 0)
		return -1;
	return 0;
}

static int drive_line(struct vcpu *v, int level)
{
	struct kvm_irq_level irq = {
		.irq = (KVM_ARM_IRQ_TYPE_CPU << KVM_ARM_IRQ_TYPE_SHIFT) |
		       (v->idx << KVM_ARM_IRQ_VCPU_SHIFT) | KVM_ARM_IRQ_CPU_IRQ,
		.level = level,
	};
	char late[32] = "";

	if (ioctl(v->vm->fd, KVM_IRQ_LINE, &irq) < 0)
		return -1;
	if (level && v->held)
		snprintf(late, sizeof(late), " held_us=%llu",
			 (unsigned long long)(now_ns() - v->held_since) / 1000);
	v->held = false;
	v->line = level;
	rec_emit(v->vm->t->name, "inject", "vcpu=%d level=%d cnt=%llx%s", v->idx, level,
		 (unsigned long long)read_cnt(), late);
	return 0;
}

/* Arm (ms > 0) or disarm (ms == 0) timer tm; interval_us > 0 repeats. */
static int set_alarm(timer_t tm, unsigned int ms, unsigned int interval_us)
{
	struct itimerspec its = {
		.it_value = { ms / 1000, (ms % 1000) * 1000000L },
		.it_interval = { interval_us / 1000000, (interval_us % 1000000) * 1000L },
	};

	if (interval_us && !ms)
		its.it_value = its.it_interval;
	return timer_settime(tm, 0, &its, NULL);
}

/*
 * Follow the line the ABI showed (want): a fall is driven at once; a rise
 * at once, or held back by the spec's inject option: "late" arms a
 * SIGALRM for the delay and lets the vCPU run on, "never" keeps it held.
 */
static int follow_line(struct vcpu *v, int want)
{
	const struct vt_test *t = v->vm->t;

	if (!want) {
		if (v->held) {
			v->held = false;
			if (v->has_kick)
				set_alarm(v->kick, 0, 0);
			rec_emit(t->name, "hold", "vcpu=%d level=0 why=fell", v->idx);
		}
		return v->line ? drive_line(v, 0) : 0;
	}
	if (v->line || v->held)
		return 0;
	if (t->inject == INJECT_NOW)
		return drive_line(v, 1);
	v->held = true;
	v->held_since = now_ns();
	rec_emit(t->name, "hold", "vcpu=%d level=1 why=%s delay_ms=%u", v->idx,
		 inject_names[t->inject], t->inject_delay_ms);
	if (t->inject == INJECT_LATE && set_alarm(v->kick, t->inject_delay_ms, 0) < 0)
		return -1;
	return 0;
}

/* Inject a late rise once its delay is over. */
static int release_line(struct vcpu *v)
{
	const struct vt_test *t = v->vm->t;

	if (!v->held || t->inject != INJECT_LATE ||
	    now_ns() - v->held_since < t->inject_delay_ms * 1000000ULL)
		return 0;
	set_alarm(v->kick, 0, 0);	/* released by another exit: no kick needed */
	return drive_line(v, 1);
}

static int one_reg(struct vcpu *v, unsigned long req, uint64_t id, uint64_t *val)
{
	struct kvm_one_reg reg = { .id = id, .addr = (uint64_t)val };

	return ioctl(v->fd, req, &reg);
}

/*
 * The guest asked (VT_SAVE) for its vtimer to be migrated: read CTL, CNT
 * and CVAL with KVM_GET_ONE_REG, let the spec's downtime pass with the
 * vCPU stopped, write them back as a destination VMM would (CNT last: it
 * sets the virtual offset, so the guest's counter does not see the
 * downtime), and read them again. The VMM's own line state is kept: it is
 * the same VM.
 */
static int save_restore(struct vcpu *v)
{
	static const uint64_t ids[] = {
		KVM_REG_ARM_TIMER_CTL, KVM_REG_ARM_TIMER_CVAL, KVM_REG_ARM_TIMER_CNT,
	};
	const char *name = v->vm->t->name;
	uint64_t saved[3], back[3];
	int i;

	for (i = 0; i < 3; i++)
		if (one_reg(v, KVM_GET_ONE_REG, ids[i], &saved[i]) < 0)
			return -1;
	rec_emit(name, "save", "vcpu=%d ctl=0x%llx cval=0x%llx cnt=0x%llx line=%d",
		 v->idx, (unsigned long long)saved[0], (unsigned long long)saved[1],
		 (unsigned long long)saved[2], v->line);
	if (v->vm->t->downtime_ms)
		usleep(v->vm->t->downtime_ms * 1000);
	for (i = 0; i < 3; i++)
		if (one_reg(v, KVM_SET_ONE_REG, ids[i], &saved[i]) < 0)
			return -1;
	for (i = 0; i < 3; i++)
		if (one_reg(v, KVM_GET_ONE_REG, ids[i], &back[i]) < 0)
			return -1;
	rec_emit(name, "restore", "vcpu=%d ctl=0x%llx cval=0x%llx cnt=0x%llx downtime_ms=%u",
		 v->idx, (unsigned long long)back[0], (unsigned long long)back[1],
		 (unsigned long long)back[2], v->vm->t->downtime_ms);
	/* ISTATUS (bit 2) is computed; ENABLE and IMASK must come back as written */
	if ((back[0] & 3) != (saved[0] & 3) || back[1] != saved[1] || back[2] < saved[2]) {
		errno = EIO;
		return -1;
	}
	return 0;
}

/* A guest store to a report port. Returns true when the vCPU is done. */
static bool handle_port(struct vcpu *v, char *extra, size_t len)
{
	struct kvm_run *run = v->run;
	uint64_t off = run->mmio.phys_addr - VT_PORT_BASE;
	uint64_t val = 0;
	unsigned int port = off / 8;

	memcpy(&val, run->mmio.data, run->mmio.len < 8 ? run->mmio.len : 8);
	if (!run->mmio.is_write)
		memset(run->mmio.data, 0, sizeof(run->mmio.data));
	if (run->mmio.phys_addr < VT_PORT_BASE || off % 8 || port >= VT_NR_PORTS ||
	    !run->mmio.is_write) {
		snprintf(extra, len, " addr=0x%llx write=%d val=0x%llx",
			 (unsigned long long)run->mmio.phys_addr,
			 run->mmio.is_write, (unsigned long long)val);
		v->status = VT_ST_VMM_ERROR;
		return true;
	}
	snprintf(extra, len, " port=%s val=0x%llx", port_names[port],
		 (unsigned long long)val);
	if (port == VT_SAVE) {
		if (!v->vm->t->save_restore) {
			rec_emit(v->vm->t->name, "error",
				 "vcpu=%d msg=\"VT_SAVE without the spec's vmm.save_restore\"",
				 v->idx);
			v->status = VT_ST_VMM_ERROR;
			return true;
		}
		v->save_req = true;
	}
	if (port == VT_EXIT) {
		v->status = val == VT_EXIT_OK ? VT_ST_OK :
			    val == VT_EXIT_TIMEOUT ? VT_ST_GUEST_TIMEOUT :
			    VT_ST_GUEST_FAIL;
		return true;
	}
	return false;
}

static void on_alarm(int sig)
{
	(void)sig;
	alarms_taken++;
}

/*
 * SIGALRM reaches a vCPU thread only inside KVM_RUN (KVM_SET_SIGNAL_MASK),
 * where it makes KVM_RUN return EINTR; outside it stays blocked, pending,
 * and the loop eats it (as QEMU does with SIG_IPI). Its timers (a late
 * injection's kick, the spec's periodic alarm) target this thread.
 */
static int vcpu_signals(struct vcpu *v)
{
	const struct vt_test *t = v->vm->t;
	union {
		struct kvm_signal_mask m;
		uint8_t raw[sizeof(struct kvm_signal_mask) + 8];
	} km;
	struct sigevent sev;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGALRM);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) ||
	    pthread_sigmask(SIG_BLOCK, NULL, &set))
		return -1;
	sigdelset(&set, SIGALRM);
	km.m.len = 8;		/* the kernel's sigset_t */
	memcpy(km.m.sigset, &set, 8);
	if (ioctl(v->fd, KVM_SET_SIGNAL_MASK, &km.m) < 0)
		return -1;

	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = SIGALRM;
	sev._sigev_un._tid = gettid();
	if (t->inject == INJECT_LATE) {
		if (timer_create(CLOCK_MONOTONIC, &sev, &v->kick) < 0)
			return -1;
		v->has_kick = true;
	}
	if (t->alarm_us) {
		if (timer_create(CLOCK_MONOTONIC, &sev, &v->alarm) < 0)
			return -1;
		v->has_alarm = true;
		if (set_alarm(v->alarm, 0, t->alarm_us) < 0)
			return -1;
	}
	return 0;
}

static void vcpu_signals_end(struct vcpu *v)
{
	if (v->has_kick)
		timer_delete(v->kick);
	if (v->has_alarm)
		timer_delete(v->alarm);
}

/* Eat the pending SIGALRMs; returns how many this KVM_RUN return had. */
static int eat_alarms(void)
{
	static const struct timespec zero;
	sigset_t set;
	int n = alarms_taken;

	alarms_taken = 0;
	sigemptyset(&set);
	sigaddset(&set, SIGALRM);
	while (sigtimedwait(&set, NULL, &zero) == SIGALRM)
		n++;
	return n;
}

/*
 * Is the vCPU in an exit storm? An idle exit tells user space nothing: no
 * guest report, no signal of ours, the level shown unchanged. A storm is
 * VT_STORM_RATE idle exits a second or more in every 100 ms window for
 * VT_STORM_MS in a row; a healthy kernel makes next to none.
 */
static bool storming(struct vcpu *v, bool idle, uint64_t now)
{
	uint64_t span = now - v->win_start;

	if (span >= STORM_WINDOW_NS) {
		bool busy = v->win_idle * 1000000000ULL >= (uint64_t)VT_STORM_RATE * span;

		if (busy && !v->storm_windows)
			v->storm_start = v->win_start;
		v->storm_windows = busy ? v->storm_windows + 1 : 0;
		v->storm_idle = busy ? v->storm_idle + v->win_idle : 0;
		v->win_start = now;
		v->win_idle = 0;
	}
	v->win_idle += idle;
	return v->storm_windows * (STORM_WINDOW_NS / 1000000) >= VT_STORM_MS;
}

/* The exit's record; those without a guest report stop at VT_EXIT_RECORDS_MAX. */
static bool keep_exit_record(bool port)
{
	if (port || __atomic_fetch_add(&exit_records, 1, __ATOMIC_RELAXED) < VT_EXIT_RECORDS_MAX)
		return true;
	__atomic_fetch_add(&exit_dropped, 1, __ATOMIC_RELAXED);
	return false;
}

/* A VMM failure ends the vCPU: an error record naming the call, VT_ST_VMM_ERROR. */
static bool vcpu_fail(struct vcpu *v, const char *what)
{
	rec_emit(v->vm->t->name, "error", "vcpu=%d msg=\"%s: %s\"", v->idx, what,
		 strerror(errno));
	v->status = VT_ST_VMM_ERROR;
	return true;
}

/* What one return from KVM_RUN showed. */
struct vt_exit {
	int ret, err;		/* KVM_RUN's return and errno */
	int nsig;		/* our SIGALRMs that made it return EINTR */
	uint64_t cnt, dt;	/* the counter after it, its time in KVM_RUN (ns) */
	uint64_t level, hist;	/* the level and (v5) history the ABI shows */
	bool shown, has_hist;
	bool notice;		/* the kernel's notice of a change (never our signal) */
	bool read;		/* the VMM reads the level on this exit (its policy) */
	char extra[128];	/* the guest report or the odd MMIO access */
};

/* One KVM_RUN; the fault injection's crash; which of our signals it took. */
static void vcpu_run(struct vcpu *v, struct vt_exit *x)
{
	const struct vt_test *t = v->vm->t;
	uint64_t t0 = now_ns();

	x->ret = ioctl(v->fd, KVM_RUN, 0);
	x->err = errno;
	x->cnt = read_cnt();
	x->dt = now_ns() - t0;
	v->exits++;
	if (t->crash_after_exits && v->exits == t->crash_after_exits) {
		rec_flush();
		*(volatile int *)0 = 0;	/* fault injection: the VMM crashes */
	}
	/* a signal exit: ours only if it was EINTR (else it kicks the next run) */
	if (x->ret < 0 && x->err == EINTR)
		x->nsig = eat_alarms();
}

/* The level, the history and whether this exit is the kernel's notice. */
static void vcpu_read_abi(struct vcpu *v, struct vt_exit *x)
{
	const struct vt_test *t = v->vm->t;
	struct kvm_run *run = v->run;

	x->shown = t->abi->level(run, &x->level);
	x->has_hist = t->abi->history && t->abi->history(run, &x->hist);
	/*
	 * An EINTR our own SIGALRM caused is no notice of the kernel's,
	 * unless the ABI's history shows the kernel notified then too
	 * (v5 writes it only at a forced notice).
	 */
	x->notice = t->abi->notice(run, x->ret, x->err) &&
		    (!x->nsig || (x->has_hist && x->hist != v->hist));
	x->read = x->shown && (t->policy == POLICY_EVERY_EXIT || x->notice);
	if (x->has_hist)
		v->hist = x->hist;
}

/* The exit reason's handling. Returns true when the vCPU is done. */
static bool vcpu_handle_reason(struct vcpu *v, struct vt_exit *x)
{
	if (x->ret != 0)
		return false;
	switch (v->run->exit_reason) {
	case KVM_EXIT_MMIO:
		return handle_port(v, x->extra, sizeof(x->extra));
	case KVM_EXIT_SYSTEM_EVENT:
		v->status = VT_ST_OK;
		return true;
	default:
		if (x->notice)
			return false;
		v->status = VT_ST_VMM_ERROR;
		return true;
	}
}

/* The exit's record (those without a guest report are bounded). */
static void vcpu_record(struct vcpu *v, const struct vt_exit *x)
{
	char hist[32] = "", lvl[24] = "-", sig[16] = "";

	if (!keep_exit_record(x->extra[0]))
		return;
	if (x->shown)
		snprintf(lvl, sizeof(lvl), "%llx", (unsigned long long)x->level);
	if (x->has_hist)
		snprintf(hist, sizeof(hist), " hist=%llx", (unsigned long long)x->hist);
	if (x->nsig)
		snprintf(sig, sizeof(sig), " sig=%d", x->nsig);
	rec_emit(v->vm->t->name, "exit",
		 "vcpu=%d n=%llu r=%s err=%d dt=%llu cnt=%llx lvl=%s read=%d ntc=%d%s%s%s",
		 v->idx, (unsigned long long)v->exits,
		 exit_reason_name(v->run->exit_reason), x->ret < 0 ? x->err : 0,
		 (unsigned long long)x->dt, (unsigned long long)x->cnt, lvl, x->read,
		 x->notice, sig, hist, x->extra);
}

/* An exit storm ends the test for every vCPU: its record, VT_ST_STORM. */
static bool vcpu_storm(struct vcpu *v, const struct vt_exit *x)
{
	bool idle = !x->extra[0] && !x->nsig && (!x->shown || x->level == v->shown);

	if (x->shown)
		v->shown = x->level;
	if (!storming(v, idle, now_ns()))
		return false;
	rec_emit(v->vm->t->name, "storm",
		 "vcpu=%d idle_exits=%llu ms=%llu exits=%llu rate_min=%d window_ms=%d",
		 v->idx, (unsigned long long)v->storm_idle,
		 (unsigned long long)(now_ns() - v->storm_start) / 1000000,
		 (unsigned long long)v->exits, VT_STORM_RATE, VT_STORM_MS);
	v->status = VT_ST_STORM;
	stop_vcpus();
	return true;
}

/*
 * Drive the IRQ line from what was read (on the vCPU's last exit too), then
 * release a held rise and do a save/restore the guest asked for.
 */
static bool vcpu_follow(struct vcpu *v, const struct vt_exit *x, bool done)
{
	if (x->read) {
		v->level = x->level;
		if (follow_line(v, !!(x->level & v->vm->t->abi->timers)) < 0)
			return vcpu_fail(v, "KVM_IRQ_LINE");
	}
	if (done)
		return true;
	if (release_line(v) < 0)
		return vcpu_fail(v, "KVM_IRQ_LINE (late)");
	if (v->save_req) {
		v->save_req = false;
		if (save_restore(v) < 0)
			return vcpu_fail(v, "timer save/restore");
	}
	return false;
}

/* One KVM_RUN and its exit, start to end. Returns true when the vCPU is done. */
static bool vcpu_exit(struct vcpu *v)
{
	struct vt_exit x = { 0 };
	bool done;

	vcpu_run(v, &x);
	if (vt_stop) {
		char sig[16] = "";

		if (x.nsig)
			snprintf(sig, sizeof(sig), " sig=%d", x.nsig);
		rec_emit(v->vm->t->name, "exit",
			 "vcpu=%d n=%llu r=%s err=%d dt=%llu lvl=- read=0 ntc=0 stop=1%s",
			 v->idx, (unsigned long long)v->exits,
			 exit_reason_name(v->run->exit_reason), x.ret < 0 ? x.err : 0,
			 (unsigned long long)x.dt, sig);
		v->status = VT_ST_WATCHDOG;
		return true;
	}
	if (x.ret < 0 && x.err != EINTR) {
		errno = x.err;
		return vcpu_fail(v, "KVM_RUN");
	}
	vcpu_read_abi(v, &x);
	done = vcpu_handle_reason(v, &x);
	vcpu_record(v, &x);
	if (!done && vcpu_storm(v, &x))
		return true;
	return vcpu_follow(v, &x, done);
}

static void *vcpu_loop(void *arg)
{
	struct vcpu *v = arg;
	bool done = false;

	if (vcpu_signals(v) < 0)
		done = vcpu_fail(v, "vCPU signals");
	v->shown = ~0ULL;
	v->win_start = now_ns();
	rec_emit(v->vm->t->name, "thread", "vcpu=%d tid=%d", v->idx, (int)gettid());	/* kt's tid= */
	while (!done)
		done = vcpu_exit(v);
	vcpu_signals_end(v);
	return NULL;
}


static void on_kick(int sig)
{
	(void)sig;
}

/* SIGUSR1 from the watchdog: stop, and kick every vCPU out of KVM_RUN. */
static void on_stop(int sig)
{
	(void)sig;
	stop_vcpus();
}

/*
 * The VM's CNTVOFF, as layer 0 sees KVM write it at each load: the L1 counter
 * less the guest's (KVM_REG_ARM_TIMER_CNT), read together. It ties the test to
 * its VM in QEMU's trace, however far the trace runs ahead of the console.
 */
static uint64_t vm_cntvoff(const struct vcpu *v)
{
	uint64_t guest = 0, before, after;
	struct kvm_one_reg reg = {
		.id = KVM_REG_ARM_TIMER_CNT,
		.addr = (uint64_t)&guest,
	};

	before = read_cnt();
	if (ioctl(v->fd, KVM_GET_ONE_REG, &reg) < 0)
		return 0;
	after = read_cnt();
	return before + (after - before) / 2 - guest;
}

int run_test(const struct vt_test *t)
{
	struct vcpu vcpus[VT_MAX_VCPUS];
	struct sigaction sa;
	struct vm vm = { .t = t };
	sigset_t set;
	int i, status = VT_ST_OK;

	memset(vcpus, 0, sizeof(vcpus));
	if (t->garble_record)
		rec_fault_garble(t->garble_record);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick;	/* no SA_RESTART: KVM_RUN returns EINTR */
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_stop;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);

	if (vm_create(&vm) < 0) {
		rec_emit(t->name, "error", "msg=\"VM setup: %s\"", strerror(errno));
		return VT_ST_VMM_ERROR;
	}
	for (i = 0; i < t->vcpus; i++) {
		vcpus[i].vm = &vm;
		vcpus[i].idx = i;
		if (vcpu_create(&vm, &vcpus[i]) < 0) {
			rec_emit(t->name, "error", "vcpu=%d msg=\"vCPU setup: %s\"",
				 i, strerror(errno));
			return VT_ST_VMM_ERROR;
		}
	}
	rec_emit(t->name, "begin",
		 "vcpus=%d abi=%s policy=%s inject=%s inject_delay_ms=%u alarm_us=%u save_restore=%d downtime_ms=%u cntvoff=%llx",
		 t->vcpus, t->abi->name,
		 t->policy == POLICY_EINTR_ONLY ? "eintr-only" : "every-exit",
		 inject_names[t->inject], t->inject_delay_ms, t->alarm_us,
		 t->save_restore, t->downtime_ms,
		 (unsigned long long)vm_cntvoff(&vcpus[0]));

	/* The vCPU threads take only kicks (SIGUSR2); this thread takes SIGUSR1. */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (i = 0; i < t->vcpus; i++) {
		if (pthread_create(&threads[i], NULL, vcpu_loop, &vcpus[i])) {
			rec_emit(t->name, "error", "msg=\"pthread_create failed\"");
			return VT_ST_VMM_ERROR;
		}
		nthreads++;
	}
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	for (i = 0; i < t->vcpus; i++) {
		pthread_join(threads[i], NULL);
		if (vcpus[i].status > status)
			status = vcpus[i].status;
	}
	if (exit_dropped)
		rec_emit(t->name, "drop", "what=exit n=%llu kept=%d",
			 (unsigned long long)exit_dropped, VT_EXIT_RECORDS_MAX);
	return status;
}
