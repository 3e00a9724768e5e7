// SPDX-License-Identifier: GPL-2.0
/*
 * A periodic SIGALRM (spec: vmm.alarm_us, 2 ms) kicks the vCPU thread
 * out of KVM_RUN while the handler re-arms the virtual timer 6 ms ahead
 * 4 times and the guest spins with no exits: signal exits (EINTR with the
 * level unchanged) must not be taken for timer notices; 4 edges, 4 IRQs.
 */
#include "guest.h"

#define REARM_N		4
#define PERIOD_MS	6

void vt_timer_irq(unsigned int pending)
{
	periodic_vtimer_irq(pending);
}

int vt_main(unsigned int cpu)
{
	(void)cpu;
	return periodic_vtimer(REARM_N, PERIOD_MS);
}
