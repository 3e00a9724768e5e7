// SPDX-License-Identifier: GPL-2.0
/*
 * ENABLE cleared while the timer is pending: with IRQs masked (PSTATE.I)
 * the guest lets the line rise and reports (an exit showing it high, so
 * user space raises the IRQ line), clears ENABLE and reports again (an
 * exit showing it low, so user space lowers the line). When the guest
 * then unmasks IRQs, no IRQ may come: neither a timer IRQ nor a spurious
 * one from a line left high.
 */
#include "guest.h"

int vt_main(unsigned int cpu)
{
	(void)cpu;
	timer_cval(0, cntvct());
	timer_ctl(0, CTL_ENABLE);
	VT_CHECK(wait_istatus(0, 100) == 0);
	vt_report(VT_MARK, 1);		/* the line shows high here */
	timer_ctl(0, 0);
	VT_CHECK_EQ(timer_ctl_read(0) & CTL_ENABLE, 0);
	vt_report(VT_MARK, 2);		/* and low here */
	irq_unmask();
	spin_ms(20);
	irq_mask();
	VT_CHECK_EQ(vt_irqs, 0);
	return VT_EXIT_OK;
}
