// SPDX-License-Identifier: GPL-2.0
/*
 * User space never injects (spec: vmm.inject never). The guest's timer
 * fires and stays pending; the guest waits 100 ms with a heartbeat every
 * 5 ms, sees ISTATUS set and no IRQ, masks the timer and passes: its
 * bounded wait, not the watchdog, ends the test.
 */
#include "guest.h"

int vt_main(unsigned int cpu)
{
	(void)cpu;
	timer_arm(0, ms_to_ticks(5));
	irq_unmask();
	wait_irqs(1, 100, WAIT_BEAT);
	VT_CHECK_EQ(vt_irqs, 0);
	VT_CHECK(timer_istatus(0));
	timer_mask(0);
	vt_report(VT_DISARM, 0);
	return VT_EXIT_OK;
}
