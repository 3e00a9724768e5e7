// SPDX-License-Identifier: GPL-2.0
/*
 * CVAL already in the past when the timer is enabled: ISTATUS is set at
 * once and the IRQ follows at once, without any exit of the guest's own.
 * Twice: CVAL just behind the counter, then CVAL = 0. "At once" counts the
 * guest's own loop iterations until the IRQ, not counter time: the counter
 * runs on while a loaded host keeps the vCPU out. Each count is reported
 * (VT_VALUE).
 */
#include "guest.h"

/*
 * About a millisecond of this loop in nested TCG (~1.7M iterations per
 * 100 ms): the enabling write raises the line at once, so the exit and the
 * IRQ come before the first iteration.
 */
#define AT_ONCE_ITERS	20000

static int fire_past(u64 cval, u64 n)
{
	u64 end, i;

	timer_cval(0, cval);
	timer_ctl(0, CTL_ENABLE);
	VT_CHECK(timer_istatus(0));
	end = cntvct() + ms_to_ticks(2000);
	for (i = 0; vt_irqs < n && cntvct() < end; i++)
		;
	VT_CHECK_GE(vt_irqs, n);
	vt_report(VT_VALUE, i);
	VT_CHECK_EQ(vt_irq(n - 1).pending, 1U << VT_TIMER_VIRT);
	VT_CHECK_LT(i, AT_ONCE_ITERS);
	return 0;
}

int vt_main(unsigned int cpu)
{
	(void)cpu;
	irq_unmask();
	VT_CHECK(fire_past(cntvct() - 1, 1) == 0);
	VT_CHECK(fire_past(0, 2) == 0);
	wait_irqs(3, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 2);
	return VT_EXIT_OK;
}
