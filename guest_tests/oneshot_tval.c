// SPDX-License-Identifier: GPL-2.0
/*
 * One-shot virtual timer armed through TVAL (10 ms) while the guest spins
 * with no exits: CVAL must read back as the counter at the write plus
 * TVAL, the IRQ must not come before CVAL, and TVAL counts down past zero.
 */
#include "guest.h"

#define DELAY_MS	10

int vt_main(unsigned int cpu)
{
	u64 before, after, cval, delta = ms_to_ticks(DELAY_MS);

	(void)cpu;
	before = cntvct();
	timer_tval(0, delta);
	after = cntvct();
	timer_ctl(0, CTL_ENABLE);
	vt_report(VT_ARM, 0);
	cval = timer_cval_read(0);
	VT_CHECK_GE(cval, before + delta);
	VT_CHECK_LE(cval, after + delta);
	/*
	 * ISTATUS agrees with the counter (the report's exit may take longer
	 * than the delay on a loaded host, so "not yet fired" is not a given).
	 */
	after = cntvct();
	VT_CHECK(timer_istatus(0) || after < cval);
	irq_unmask();
	wait_irqs(1, 2000, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, 1);
	VT_CHECK_EQ(vt_irq(0).pending, 1U << VT_TIMER_VIRT);
	VT_CHECK_GE(vt_irq(0).cnt, cval);
	VT_CHECK_LE(timer_tval_read(0), 0);
	/* masked by the handler: no second IRQ */
	wait_irqs(2, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 1);
	return VT_EXIT_OK;
}
