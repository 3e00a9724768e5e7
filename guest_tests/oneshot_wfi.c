// SPDX-License-Identifier: GPL-2.0
/* One-shot virtual timer (CVAL, 10 ms) while the vCPU sleeps in WFI. */
#include "guest.h"

int vt_main(unsigned int cpu)
{
	(void)cpu;
	timer_arm(0, ms_to_ticks(10));
	irq_unmask();
	VT_CHECK(wait_irqs(1, 2000, WAIT_WFI) == 0);
	/* the masked timer must not fire again */
	wait_irqs(2, 20, WAIT_SPIN);
	VT_CHECK(vt_irqs == 1);
	return VT_EXIT_OK;
}
