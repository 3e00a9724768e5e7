// SPDX-License-Identifier: GPL-2.0
/*
 * One guest test in one VM with no in-kernel irqchip: load the image, run
 * each vCPU in its own thread, follow the timer line through the ABI,
 * drive the vCPU's IRQ line with KVM_IRQ_LINE and record every exit.
 *
 * Runs in a child of the suite runner (init.c); SIGUSR1 from the runner's
 * watchdog stops it cleanly so its records still reach the console.
 */
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
};

#define vmm_err(v, fmt, ...)						\
	rec_emit((v)->vm->t->name, "error", "vcpu=%d msg=\"" fmt ": %s\"",	\
		 (v)->idx, ##__VA_ARGS__, strerror(errno))

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

	if (ioctl(v->vm->fd, KVM_IRQ_LINE, &irq) < 0)
		return -1;
	v->line = level;
	rec_emit(v->vm->t->name, "inject", "vcpu=%d level=%d", v->idx, level);
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
	if (port == VT_EXIT) {
		v->status = val == VT_EXIT_OK ? VT_ST_OK :
			    val == VT_EXIT_TIMEOUT ? VT_ST_GUEST_TIMEOUT :
			    VT_ST_GUEST_FAIL;
		return true;
	}
	return false;
}

static void *vcpu_loop(void *arg)
{
	struct vcpu *v = arg;
	const struct vt_test *t = v->vm->t;
	struct kvm_run *run = v->run;
	bool done = false;

	while (!done) {
		char extra[128] = "", hist[32] = "", lvl[24] = "-";
		uint64_t t0 = now_ns(), level, h;
		int ret = ioctl(v->fd, KVM_RUN, 0);
		int err = errno;
		uint64_t dt = now_ns() - t0;
		bool shown, notice, read = false;

		v->exits++;
		if (vt_stop) {
			rec_emit(t->name, "exit", "vcpu=%d n=%llu r=%s err=%d dt=%llu lvl=- read=0 ntc=0 stop=1",
				 v->idx, (unsigned long long)v->exits,
				 exit_reason_name(run->exit_reason), ret < 0 ? err : 0,
				 (unsigned long long)dt);
			v->status = VT_ST_WATCHDOG;
			break;
		}
		if (ret < 0 && err != EINTR) {
			errno = err;
			vmm_err(v, "KVM_RUN");
			v->status = VT_ST_VMM_ERROR;
			break;
		}
		shown = t->abi->level(run, &level);
		notice = t->abi->notice(run, ret, err);
		if (shown) {
			snprintf(lvl, sizeof(lvl), "%llx", (unsigned long long)level);
			read = t->policy == POLICY_EVERY_EXIT || notice;
		}
		if (t->abi->history && t->abi->history(run, &h))
			snprintf(hist, sizeof(hist), " hist=%llx", (unsigned long long)h);

		if (ret == 0) {
			switch (run->exit_reason) {
			case KVM_EXIT_MMIO:
				done = handle_port(v, extra, sizeof(extra));
				break;
			case KVM_EXIT_SYSTEM_EVENT:
				v->status = VT_ST_OK;
				done = true;
				break;
			default:
				if (!notice) {
					v->status = VT_ST_VMM_ERROR;
					done = true;
				}
			}
		}
		rec_emit(t->name, "exit", "vcpu=%d n=%llu r=%s err=%d dt=%llu lvl=%s read=%d ntc=%d%s%s",
			 v->idx, (unsigned long long)v->exits,
			 exit_reason_name(run->exit_reason), ret < 0 ? err : 0,
			 (unsigned long long)dt, lvl, read, notice, hist, extra);
		if (read) {
			v->level = level;
			if (!!(level & t->abi->timers) != v->line &&
			    drive_line(v, !!(level & t->abi->timers)) < 0) {
				vmm_err(v, "KVM_IRQ_LINE");
				v->status = VT_ST_VMM_ERROR;
				done = true;
			}
		}
	}
	return NULL;
}

static pthread_t threads[VT_MAX_VCPUS];
static int nthreads;

static void on_kick(int sig)
{
	(void)sig;
}

/* SIGUSR1 from the watchdog: stop, and kick every vCPU out of KVM_RUN. */
static void on_stop(int sig)
{
	int i;

	(void)sig;
	vt_stop = 1;
	for (i = 0; i < nthreads; i++)
		pthread_kill(threads[i], SIGUSR2);
}

int run_test(const struct vt_test *t)
{
	struct vcpu vcpus[VT_MAX_VCPUS];
	struct sigaction sa;
	struct vm vm = { .t = t };
	sigset_t set;
	int i, status = VT_ST_OK;

	memset(vcpus, 0, sizeof(vcpus));
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick;	/* no SA_RESTART: KVM_RUN returns EINTR */
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_stop;
	sigaction(SIGUSR1, &sa, NULL);

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
	rec_emit(t->name, "begin", "vcpus=%d abi=%s policy=%s", t->vcpus,
		 t->abi->name, t->policy == POLICY_EINTR_ONLY ? "eintr-only" : "every-exit");

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
	return status;
}
