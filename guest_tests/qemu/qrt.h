/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The guest runtime for tests whose VMM is QEMU (machine virt, GICv2,
 * kernel-irqchip=off): QEMU has none of our VMM's report ports, so a test
 * reports on the PL011 UART and takes its IRQs through QEMU's emulated GIC.
 *
 * A test defines qrt_test_name and qrt_test() (0 when it passed, else the
 * line of the failed QRT_CHECK), and may define qrt_timer_irq(), called for
 * each virtual timer IRQ (INTID 27) before its EOI; it must quiesce the timer
 * (the default masks it). The runtime prints a line when the guest starts
 * and the verdict line when qrt_test() returned:
 *
 *   VT-QEMU: <name> start cntfrq=<hz>
 *   VT-QEMU: <name> irqs=<n> spurious=<n> other=<n> early=<n> max_late_us=<n> ok
 *   VT-QEMU: <name> ... FAIL line=<n>
 *
 * then powers off with PSCI SYSTEM_OFF, so QEMU exits with status 0 either way:
 * the line is the verdict. Only the sysreg and timer inlines of the common
 * runtime's guest.h are available here (none of its ports or IRQ log).
 */
#ifndef QRT_H
#define QRT_H

#include "guest.h"

#define QRT_TAG		"VT-QEMU: "
#define QRT_VTIMER_INTID 27	/* PPI 11: the EL1 virtual timer on virt */

extern const char qrt_test_name[];
int qrt_test(void);
void qrt_timer_irq(void);

/* Counted by the runtime's IRQ handler. */
extern volatile u64 qrt_irqs;		/* virtual timer IRQs */
extern volatile u64 qrt_spurious;	/* GICC_IAR said 1023 */
extern volatile u64 qrt_other;		/* any other INTID */
extern volatile u64 qrt_early;		/* timer IRQs with the timer condition not met */
extern volatile u64 qrt_max_late;	/* the most counter ticks from CVAL to the handler */

void qrt_puts(const char *s);
void qrt_put_dec(u64 v);
/* A progress line: "VT-QEMU: <name> note <key>=<value>". */
void qrt_note(const char *key, u64 value);

/*
 * Wait until qrt_irqs reaches n or timeout_ms pass; 0 when reached. QRT_SPIN
 * makes no exits, QRT_MMIO reads the UART's flags (an MMIO exit to QEMU) on
 * every iteration.
 */
enum qrt_wait { QRT_SPIN, QRT_MMIO };
int qrt_wait_irqs(u64 n, u64 timeout_ms, enum qrt_wait how);

#define QRT_CHECK(cond)				\
	do {					\
		if (!(cond))			\
			return __LINE__;	\
	} while (0)

#endif
