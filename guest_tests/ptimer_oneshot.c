// SPDX-License-Identifier: GPL-2.0
/*
 * One-shot physical timer (CNTP_*, CVAL 10 ms ahead of CNTPCT) while the
 * guest spins with no exits: the ABI reports it in its own bit (PTIMER),
 * the virtual timer stays quiet.
 */
#include "guest.h"

int vt_main(unsigned int cpu)
{
	u64 cval;

	(void)cpu;
	timer_arm(1, ms_to_ticks(10));
	cval = timer_cval_read(1);
	irq_unmask();
	wait_irqs(1, 2000, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, 1);
	VT_CHECK_EQ(vt_irq(0).pending, 1U << VT_TIMER_PHYS);
	VT_CHECK_GE(cntpct(), cval);
	wait_irqs(2, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 1);
	return VT_EXIT_OK;
}
