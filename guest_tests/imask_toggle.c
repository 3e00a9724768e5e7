// SPDX-License-Identifier: GPL-2.0
/*
 * The timer condition holds all along (CVAL in the past, ENABLE set) and
 * only IMASK changes: each time the guest clears it the line must rise
 * (one edge, one IRQ), each time the handler sets it the line must fall.
 * The guest spins with no exits in between, so every rise needs a forced
 * exit.
 */
#include "guest.h"

#define TOGGLES		4

static u64 cval;

void vt_timer_irq(unsigned int pending)
{
	/* the condition still holds: only IMASK will drop the line */
	if (timer_istatus(0) && timer_cval_read(0) == cval)
		timer_mask(0);
	else
		timer_ctl(0, 0);	/* the check in vt_main fails */
	(void)pending;
}

int vt_main(unsigned int cpu)
{
	u64 i;

	(void)cpu;
	cval = cntvct();
	timer_cval(0, cval);
	timer_mask(0);
	VT_CHECK(wait_istatus(0, 100) == 0);
	irq_unmask();
	for (i = 0; i < TOGGLES; i++) {
		vt_report(VT_MARK, i);
		timer_ctl(0, CTL_ENABLE);	/* IMASK cleared */
		wait_irqs(i + 1, 2000, WAIT_SPIN);
		VT_CHECK_GE(vt_irqs, i + 1);
		VT_CHECK_EQ(vt_irq(i).pending, 1U << VT_TIMER_VIRT);
		VT_CHECK_EQ(timer_ctl_read(0), CTL_ENABLE | CTL_IMASK | CTL_ISTATUS);
		/* masked again: no IRQ while it stays so */
		spin_ms(5);
		VT_CHECK_EQ(vt_irqs, i + 1);
	}
	return VT_EXIT_OK;
}
