/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The bare-metal guest runtime: what a guest test may use.
 *
 * A test defines vt_main(cpu), returning its exit code, and may define
 * vt_timer_irq(pending), called from the IRQ vector with the set of
 * timers whose output is high; it must quiesce them (mask, disable or
 * re-arm) or the line stays high. The default masks every pending timer.
 *
 * Every vCPU runs vt_main with its own index; the runtime's counters and
 * IRQ log are per vCPU (RAM is shared, the MMU is off: no atomics).
 */
#ifndef VT_GUEST_H
#define VT_GUEST_H

#include <stdbool.h>

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

static inline int timer_tval_read(int t)
{
	return (int)(t ? sysreg_read(cntp_tval_el0) : sysreg_read(cntv_tval_el0));
}

static inline bool timer_istatus(int t)
{
	return timer_ctl_read(t) & CTL_ISTATUS;
}

static inline u64 timer_now(int t) { return t ? cntpct() : cntvct(); }

/* The vCPU index: start.S keeps it in TPIDR_EL1. */
static inline unsigned int cpu_id(void) { return sysreg_read(tpidr_el1); }

static inline void irq_unmask(void) { asm volatile("msr daifclr, #2" : : : "memory"); }
static inline void irq_mask(void) { asm volatile("msr daifset, #2" : : : "memory"); }
static inline void wfi(void) { asm volatile("dsb sy; wfi" : : : "memory"); }
static inline bool irqs_masked(void) { return sysreg_read(daif) & (1UL << 7); }

/* Arm timer t to fire delta ticks from now (CVAL), unmasked. */
void timer_arm(int t, u64 delta);
/*
 * Arm timer t delta ticks ahead and sleep in WFI until its IRQ (or timeout_ms
 * of counter time). The VT_ARM report (value VT_ARM_WFI | t) comes before
 * the arming and IRQs stay masked from the arming to the WFI, so nothing
 * but a few instructions lies between them. Returns 0 when the IRQ came.
 */
int timer_arm_wfi(int t, u64 delta, u64 timeout_ms);
/*
 * From an IRQ handler: re-arm timer t delta ticks ahead. The timer stays
 * masked until the runtime's VT_IRQ report is out, then is unmasked, so
 * the report's exit always shows the line low.
 */
void timer_rearm(int t, u64 delta);
/* Mask timer t (IMASK set, ENABLE kept). */
void timer_mask(int t);

/*
 * IRQs taken so far on this vCPU (incremented by the runtime before
 * vt_timer_irq), and a log of the first VT_IRQ_LOG of them: the timers
 * pending and CNTVCT at entry.
 */
#define VT_IRQ_LOG	16
struct vt_irq_rec {
	u64 cnt;
	u32 pending;
};
extern volatile u64 vt_irq_count[VT_MAX_VCPUS];
extern volatile struct vt_irq_rec vt_irq_log[VT_MAX_VCPUS][VT_IRQ_LOG];
#define vt_irqs		(vt_irq_count[cpu_id()])
#define vt_irq(i)	(vt_irq_log[cpu_id()][i])

enum vt_wait { WAIT_SPIN, WAIT_MMIO, WAIT_WFI, WAIT_BEAT };
#define VT_BEAT_MS	5
/*
 * Wait until vt_irqs reaches n or timeout_ms of counter time passes.
 * WAIT_SPIN makes no exit at all, WAIT_MMIO reports a heartbeat on every
 * iteration, WAIT_WFI sleeps (and leaves IRQs unmasked), WAIT_BEAT spins
 * with a heartbeat (the iteration count) every VT_BEAT_MS and times out
 * only after timeout_ms / VT_BEAT_MS heartbeats too: the counter runs on
 * while a loaded host keeps the vCPU out, the heartbeats count time the
 * guest really ran. Returns 0 when reached.
 */
int wait_irqs(u64 n, u64 timeout_ms, enum vt_wait how);
/* Spin for ms of counter time with no exits. */
void spin_ms(u64 ms);
/*
 * Spin for ms of counter time and at least ms / period_ms heartbeats,
 * counting loop iterations, with a VT_HBEAT report of the count every
 * period_ms. Returns the iterations.
 */
u64 spin_heartbeat(u64 ms, u64 period_ms);
/* Spin until timer t shows ISTATUS; returns 0, or -1 after timeout_ms. */
int wait_istatus(int t, u64 timeout_ms);

/*
 * A periodic virtual timer: periodic_vtimer_irq() re-arms it period_ms
 * ahead until n IRQs were taken, then masks it; periodic_vtimer() arms it,
 * spins with no exits until the n IRQs came and checks no more follow.
 * A test using it calls periodic_vtimer_irq() from its vt_timer_irq().
 */
void periodic_vtimer_irq(unsigned int pending);
int periodic_vtimer(u64 n, u64 period_ms);

int vt_main(unsigned int cpu);
void vt_timer_irq(unsigned int pending);

/* Which file a VT_FAIL line is in: 0 the test's own source, 1 runtime.c. */
#ifndef VT_CHECK_FILE
#define VT_CHECK_FILE	0
#endif

#define VT_CMP_ENUM(name, nr, op) VT_CMP_##name = (nr),
enum vt_cmp { VT_CMP_NONE = 0, VT_CMPS(VT_CMP_ENUM) };
#undef VT_CMP_ENUM

/*
 * A failed check at where (its line and file, VT_CHECK_WHERE): reports
 * VT_EXPECTED and VT_OBSERVED (unless cmp is VT_CMP_NONE), then VT_FAIL
 * with where, the comparison and the hash of text (VT_FAIL_* in vt_ports.h).
 */
#define VT_CHECK_WHERE	((u64)VT_CHECK_FILE << VT_FAIL_FILE_SHIFT | __LINE__)
void vt_check_failed(u64 where, enum vt_cmp cmp, bool is_signed, const char *text,
		     u64 observed, u64 expected);
/* 16 bits of FNV-1a of s, never 0; the harness computes the same. */
u32 vt_check_hash(const char *s);

/* On failure a check reports and makes the calling function return VT_EXIT_FAIL. */
#define VT_CHECK(cond)						\
	do {							\
		if (!(cond)) {					\
			vt_check_failed(VT_CHECK_WHERE, VT_CMP_NONE, false, #cond, 0, 0); \
			return VT_EXIT_FAIL;			\
		}						\
	} while (0)

#define _VT_SIGNED(x) _Generic((x), int: 1, long: 1, long long: 1, default: 0)

/*
 * VT_CHECK_<OP>(observed, expected): observed <op> expected for integer
 * operands, compared as C compares them (the usual arithmetic conversions,
 * signed when their common type is: then the verdict shows negative values
 * as such); each side is evaluated
 * once, and on failure both values reach the verdict. The text is
 * stringified here, before the arguments' macros expand.
 */
#define _VT_CHECK_CMP(a, op, b, cmp, text)				\
	do {								\
		__auto_type __vt_a = (a);				\
		__auto_type __vt_b = (b);				\
		typedef __typeof__(__vt_a + __vt_b) __vt_t;		\
		if (!((__vt_t)__vt_a op (__vt_t)__vt_b)) {		\
			vt_check_failed(VT_CHECK_WHERE, cmp, _VT_SIGNED(__vt_a + __vt_b), \
					text, (u64)__vt_a, (u64)__vt_b);	\
			return VT_EXIT_FAIL;				\
		}							\
	} while (0)

#define VT_CHECK_EQ(observed, expected) \
	_VT_CHECK_CMP(observed, ==, expected, VT_CMP_EQ, #observed ", " #expected)
#define VT_CHECK_NE(observed, expected) \
	_VT_CHECK_CMP(observed, !=, expected, VT_CMP_NE, #observed ", " #expected)
#define VT_CHECK_LT(observed, expected) \
	_VT_CHECK_CMP(observed, <, expected, VT_CMP_LT, #observed ", " #expected)
#define VT_CHECK_LE(observed, expected) \
	_VT_CHECK_CMP(observed, <=, expected, VT_CMP_LE, #observed ", " #expected)
#define VT_CHECK_GT(observed, expected) \
	_VT_CHECK_CMP(observed, >, expected, VT_CMP_GT, #observed ", " #expected)
#define VT_CHECK_GE(observed, expected) \
	_VT_CHECK_CMP(observed, >=, expected, VT_CMP_GE, #observed ", " #expected)

#endif
