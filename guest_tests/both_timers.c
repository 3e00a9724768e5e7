// SPDX-License-Identifier: GPL-2.0
/*
 * Both timers on the one IRQ line. First one after the other: virtual
 * armed 5 ms ahead, its IRQ taken (and the timer masked), then physical
 * 5 ms ahead: two IRQs, each finding only its own timer pending (armed
 * apart, so a stalled host cannot make them fire together). Then at
 * once: both fire while IRQs are masked, the guest reports (the exit
 * shows both bits), unmasks and takes one IRQ that finds both pending.
 */
#include "guest.h"

#define VIRT	(1U << VT_TIMER_VIRT)
#define PHYS	(1U << VT_TIMER_PHYS)

int vt_main(unsigned int cpu)
{
	(void)cpu;
	timer_arm(0, ms_to_ticks(5));
	irq_unmask();
	wait_irqs(1, 2000, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, 1);
	timer_arm(1, ms_to_ticks(5));
	wait_irqs(2, 2000, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, 2);
	VT_CHECK_EQ(vt_irq(0).pending, VIRT);
	VT_CHECK_EQ(vt_irq(1).pending, PHYS);
	VT_CHECK_GT(vt_irq(1).cnt, vt_irq(0).cnt);

	irq_mask();
	vt_report(VT_MARK, 1);
	timer_cval(0, cntvct());
	timer_cval(1, cntpct());
	timer_ctl(0, CTL_ENABLE);
	timer_ctl(1, CTL_ENABLE);
	VT_CHECK(wait_istatus(0, 100) == 0 && wait_istatus(1, 100) == 0);
	vt_report(VT_MARK, 2);		/* the exit shows both bits */
	irq_unmask();
	wait_irqs(3, 2000, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, 3);
	VT_CHECK_EQ(vt_irq(2).pending, VIRT | PHYS);
	wait_irqs(4, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 3);
	return VT_EXIT_OK;
}
