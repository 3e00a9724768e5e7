// SPDX-License-Identifier: GPL-2.0
/*
 * The virtual timer rises while the guest spins on MMIO exits: the notice
 * may ride on an MMIO exit or come as its own KVM_EXIT_INTR.
 */
#include "guest.h"

int vt_main(unsigned int cpu)
{
	(void)cpu;
	timer_arm(0, ms_to_ticks(10));
	irq_unmask();
	wait_irqs(1, 2000, WAIT_MMIO);
	VT_CHECK_GE(vt_irqs, 1);
	wait_irqs(2, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 1);
	return VT_EXIT_OK;
}
