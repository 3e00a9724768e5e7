// SPDX-License-Identifier: GPL-2.0
/*
 * Periodic virtual timer: the handler re-arms it REARM_N times, the guest
 * spins with no exits at all, so only forced exits can deliver the edges.
 */
#include "guest.h"

#define REARM_N		5
#define PERIOD_MS	5

void vt_timer_irq(unsigned int pending)
{
	if (!(pending & (1U << VT_TIMER_VIRT)))
		return;
	if (vt_irqs < REARM_N)
		timer_cval(0, cntvct() + ms_to_ticks(PERIOD_MS));
	else
		timer_mask(0);
}

int vt_main(unsigned int cpu)
{
	(void)cpu;
	timer_arm(0, ms_to_ticks(PERIOD_MS));
	irq_unmask();
	VT_CHECK(wait_irqs(REARM_N, 5000, WAIT_SPIN) == 0);
	wait_irqs(REARM_N + 1, 3 * PERIOD_MS, WAIT_SPIN);
	VT_CHECK(vt_irqs == REARM_N);
	return VT_EXIT_OK;
}
