/* SPDX-License-Identifier: GPL-2.0 */
/* vtvmm: the harness's minimal VMM with the interrupt controller in user space. */
#ifndef VT_H
#define VT_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <linux/kvm.h>

#include "vt_limits.h"
#include "vt_ports.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- records (record.c): versioned, sequence-numbered, checksummed --- */
void rec_init(void);
const char *rec_open_channel(void);
void rec_set_buffered(bool buffered);
void rec_emit(const char *test, const char *kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void rec_flush(void);
void rec_fault_garble(unsigned int n);
uint64_t now_ns(void);

/* The L1 counter (CNTVCT_EL0: the physical count for the host), ties records to QEMU's. */
static inline uint64_t read_cnt(void)
{
	uint64_t v;

	asm volatile("isb; mrs %0, cntvct_el0" : "=r"(v));
	return v;
}

static inline uint64_t read_cntfrq(void)
{
	uint64_t v;

	asm volatile("mrs %0, cntfrq_el0" : "=r"(v));
	return v;
}

/* --- layer 1 (tracefs.c) --- */
bool kt_available(void);
void kt_start(void);
void kt_drain(const char *test);

/* --- ABIs (abi.c): how a revision reports the timer line --- */
struct vt_abi {
	const char *name;
	/* Timers (bit 0 virtual, bit 1 physical) this ABI can report. */
	uint64_t timers;
	/* The level bitmap this exit shows; false if it shows none. */
	bool (*level)(const struct kvm_run *run, uint64_t *level);
	/* Is this exit the ABI's own notice (all an eintr-only VMM reads)? */
	bool (*notice)(const struct kvm_run *run, int ret, int err);
	/* Extra kernel-written state worth logging (v5's history); optional. */
	bool (*history)(const struct kvm_run *run, uint64_t *hist);
};

const struct vt_abi *abi_find(const char *name);
const char *exit_reason_name(uint32_t reason);

enum vt_policy { POLICY_EVERY_EXIT, POLICY_EINTR_ONLY };

/* How the VMM raises the vCPU's IRQ line once it has read a rise. */
enum vt_inject {
	INJECT_NOW,	/* at once, before the vCPU runs again */
	INJECT_LATE,	/* inject_delay_ms later; the vCPU runs on meanwhile */
	INJECT_NEVER,	/* never: the guest must cope (bounded wait) */
};

/* --- one test (vm.c) --- */
struct vt_test {
	char name[VT_NAME_MAX + 1];
	char image[VT_IMAGE_MAX + 1];
	int vcpus;
	unsigned int timeout_ms;
	const struct vt_abi *abi;
	enum vt_policy policy;
	/* per-test VMM behaviour, from the spec's vmm: mapping */
	enum vt_inject inject;
	unsigned int inject_delay_ms;
	unsigned int alarm_us;		/* SIGALRM period during KVM_RUN (0: none) */
	bool save_restore;		/* honour the guest's VT_SAVE port */
	unsigned int downtime_ms;	/* between save and restore */
	/* fault injection, for the harness's own tests */
	unsigned int crash_after_exits;	/* the VMM crashes (SIGSEGV) at this exit */
	unsigned int garble_record;	/* this record of the test is mangled, the next lost */
};

extern const char *const inject_names[];

/* Child exit codes of run_test(). */
enum vt_status {
	VT_ST_OK = 0,		/* every vCPU ended, guest exit code 0 */
	VT_ST_GUEST_FAIL = 1,	/* the guest reported a failure */
	VT_ST_GUEST_TIMEOUT = 2,/* the guest's own bounded wait ran out */
	VT_ST_WATCHDOG = 3,	/* stopped by the suite watchdog */
	VT_ST_VMM_ERROR = 4,	/* a KVM call failed or the guest did the unexpected */
	VT_ST_STORM = 5,	/* an exit storm: the VMM ended the test (VT_STORM_*) */
};

int run_test(const struct vt_test *t);
void unblock_sigchld(void);
extern volatile int vt_stop;

/* --- the ABI self-check before the suite (probe.c): one "abi" record --- */
int abi_probe(void);

/* --- QEMU as the VMM of a test (qemu_vmm.c): a manifest "qemu" line --- */
void run_qemu(char *line);

#endif
