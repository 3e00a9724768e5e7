// SPDX-License-Identifier: GPL-2.0
/*
 * One-shot virtual timer (CVAL, 10 ms) while the vCPU sleeps in WFI. The
 * arming and the WFI have no exit and no IRQ window between them, so under
 * any host load the vCPU is asleep when the timer fires (VT_WAKE says so).
 */
#include "guest.h"

int vt_main(unsigned int cpu)
{
	(void)cpu;
	timer_arm_wfi(0, ms_to_ticks(10), 2000);
	VT_CHECK_GE(vt_irqs, 1);
	/* the masked timer must not fire again */
	wait_irqs(2, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 1);
	return VT_EXIT_OK;
}
