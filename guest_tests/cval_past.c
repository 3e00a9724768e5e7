// SPDX-License-Identifier: GPL-2.0
/*
 * CVAL already in the past when the timer is enabled: ISTATUS is set at
 * once and the IRQ follows at once, without any exit of the guest's own.
 * Twice: CVAL just behind the counter, then CVAL = 0.
 */
#include "guest.h"

#define AT_ONCE_MS	100	/* "at once" in nested TCG: well under the period of any test */

static int fire_past(u64 cval, u64 n)
{
	u64 start;

	timer_cval(0, cval);
	start = cntvct();
	timer_ctl(0, CTL_ENABLE);
	VT_CHECK(timer_istatus(0));
	VT_CHECK(wait_irqs(n, 2000, WAIT_SPIN) == 0);
	VT_CHECK(vt_irq(n - 1).pending == 1U << VT_TIMER_VIRT);
	VT_CHECK(vt_irq(n - 1).cnt - start < ms_to_ticks(AT_ONCE_MS));
	return 0;
}

int vt_main(unsigned int cpu)
{
	(void)cpu;
	irq_unmask();
	VT_CHECK(fire_past(cntvct() - 1, 1) == 0);
	VT_CHECK(fire_past(0, 2) == 0);
	wait_irqs(3, 20, WAIT_SPIN);
	VT_CHECK(vt_irqs == 2);
	return VT_EXIT_OK;
}
