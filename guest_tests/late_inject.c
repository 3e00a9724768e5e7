// SPDX-License-Identifier: GPL-2.0
/*
 * User space injects late: the VMM holds the rise back for 40 ms (spec:
 * vmm.inject late, inject_delay_ms 40) and lets the vCPU run on. The
 * guest spins with a heartbeat every 5 ms; its timer shows ISTATUS but no
 * IRQ comes until the VMM's alarm ends the delay, then exactly one.
 */
#include "guest.h"

#define LATE_MS		40	/* the spec's vmm.inject_delay_ms */

int vt_main(unsigned int cpu)
{
	u64 cval;

	(void)cpu;
	timer_arm(0, ms_to_ticks(5));
	cval = timer_cval_read(0);
	irq_unmask();
	wait_irqs(1, 2000, WAIT_BEAT);
	VT_CHECK_GE(vt_irqs, 1);
	VT_CHECK_EQ(vt_irq(0).pending, 1U << VT_TIMER_VIRT);
	/* the line was high LATE_MS before user space raised the IRQ */
	VT_CHECK_GE(vt_irq(0).cnt, cval + ms_to_ticks(LATE_MS));
	VT_CHECK_LT(vt_irq(0).cnt, cval + ms_to_ticks(LATE_MS + 1000));
	wait_irqs(2, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 1);
	return VT_EXIT_OK;
}
