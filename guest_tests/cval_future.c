// SPDX-License-Identifier: GPL-2.0
/*
 * CVAL far in the future: the timer never fires within the test. The
 * guest spins 50 ms with no exits, then 50 ms with a heartbeat every
 * 5 ms (exits whose level user space reads): no IRQ, no ISTATUS.
 */
#include "guest.h"

int vt_main(unsigned int cpu)
{
	(void)cpu;
	timer_arm(0, 1ULL << 62);
	irq_unmask();
	wait_irqs(1, 50, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 0);
	wait_irqs(1, 50, WAIT_BEAT);
	VT_CHECK_EQ(vt_irqs, 0);
	VT_CHECK(!timer_istatus(0));
	VT_CHECK_EQ(vt_irqs, 0);
	timer_ctl(0, 0);
	vt_report(VT_DISARM, 0);
	return VT_EXIT_OK;
}
