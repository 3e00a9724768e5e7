/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The bare-metal guest runtime: what a guest test may use.
 *
 * A test defines vt_main(cpu), returning its exit code, and may define
 * vt_timer_irq(pending), called from the IRQ vector with the set of
 * timers whose output is high; it must quiesce them (mask, disable or
 * re-arm) or the line stays high. The default masks every pending timer.
 */
#ifndef VT_GUEST_H
#define VT_GUEST_H

#include "vt_ports.h"

typedef unsigned long u64;
typedef unsigned int u32;

#define CTL_ENABLE	(1UL << 0)
#define CTL_IMASK	(1UL << 1)
#define CTL_ISTATUS	(1UL << 2)

#define sysreg_read(r) ({ u64 __v; asm volatile("mrs %0, " #r : "=r"(__v)); __v; })
#define sysreg_write(r, v) asm volatile("msr " #r ", %0" : : "r"((u64)(v)) : "memory")
#define isb() asm volatile("isb" : : : "memory")

static inline void vt_report(enum vt_port port, u64 value)
{
	*(volatile u64 *)(VT_PORT_BASE + 8UL * port) = value;
}

static inline u64 cntvct(void) { isb(); return sysreg_read(cntvct_el0); }
static inline u64 cntpct(void) { isb(); return sysreg_read(cntpct_el0); }
static inline u64 cntfrq(void) { return sysreg_read(cntfrq_el0); }
static inline u64 ms_to_ticks(u64 ms) { return cntfrq() * ms / 1000; }

/* timer 0 is the virtual timer (CNTV_*), timer 1 the physical (CNTP_*) */
static inline void timer_ctl(int t, u64 ctl)
{
	if (t)
		sysreg_write(cntp_ctl_el0, ctl);
	else
		sysreg_write(cntv_ctl_el0, ctl);
	isb();
}

static inline u64 timer_ctl_read(int t)
{
	return t ? sysreg_read(cntp_ctl_el0) : sysreg_read(cntv_ctl_el0);
}

static inline void timer_cval(int t, u64 cval)
{
	if (t)
		sysreg_write(cntp_cval_el0, cval);
	else
		sysreg_write(cntv_cval_el0, cval);
	isb();
}

static inline u64 timer_cval_read(int t)
{
	return t ? sysreg_read(cntp_cval_el0) : sysreg_read(cntv_cval_el0);
}

static inline void timer_tval(int t, u64 tval)
{
	if (t)
		sysreg_write(cntp_tval_el0, tval);
	else
		sysreg_write(cntv_tval_el0, tval);
	isb();
}

static inline u64 timer_now(int t) { return t ? cntpct() : cntvct(); }

static inline void irq_unmask(void) { asm volatile("msr daifclr, #2" : : : "memory"); }
static inline void irq_mask(void) { asm volatile("msr daifset, #2" : : : "memory"); }
static inline void wfi(void) { asm volatile("dsb sy; wfi" : : : "memory"); }

/* Arm timer t to fire delta ticks from now (CVAL), unmasked. */
void timer_arm(int t, u64 delta);
/* Mask timer t (IMASK set, ENABLE kept). */
void timer_mask(int t);

/* IRQs taken so far (incremented by the runtime before vt_timer_irq). */
extern volatile u64 vt_irqs;

enum vt_wait { WAIT_SPIN, WAIT_MMIO, WAIT_WFI };
/*
 * Wait until vt_irqs reaches n or timeout_ms of counter time passes.
 * WAIT_SPIN makes no exit at all, WAIT_MMIO reports a heartbeat on every
 * iteration, WAIT_WFI sleeps. Returns 0 when reached.
 */
int wait_irqs(u64 n, u64 timeout_ms, enum vt_wait how);

int vt_main(unsigned int cpu);
void vt_timer_irq(unsigned int pending);

#define VT_CHECK(cond)						\
	do {							\
		if (!(cond)) {					\
			vt_report(VT_FAIL, __LINE__);		\
			return VT_EXIT_FAIL;			\
		}						\
	} while (0)

#endif
