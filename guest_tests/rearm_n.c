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
	periodic_vtimer_irq(pending);
}

int vt_main(unsigned int cpu)
{
	(void)cpu;
	return periodic_vtimer(REARM_N, PERIOD_MS);
}
