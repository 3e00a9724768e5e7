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
