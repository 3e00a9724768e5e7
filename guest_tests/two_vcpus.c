// SPDX-License-Identifier: GPL-2.0
/*
 * Two vCPUs, each with its own virtual timer and its own IRQ line.
 * vCPU 0 re-arms its timer 4 ms ahead 3 times from its handler and spins
 * with no exits; vCPU 1 arms 7 ms ahead 2 times and sleeps in WFI each time
 * (timer_arm_wfi: no window between arming and sleeping, so a host stall
 * cannot make the timer fire before the vCPU sleeps). Each takes exactly
 * its own IRQs: the lines are kept apart.
 */
#include "guest.h"

static const u64 rearms[2] = { 3, 2 };
static const u64 period_ms[2] = { 4, 7 };

void vt_timer_irq(unsigned int pending)
{
	if (!(pending & (1U << VT_TIMER_VIRT)))
		return;
	if (cpu_id() == 0 && vt_irqs < rearms[0])
		timer_rearm(0, ms_to_ticks(period_ms[0]));
	else
		timer_mask(0);
}

int vt_main(unsigned int cpu)
{
	u64 i;

	VT_CHECK_EQ(cpu, cpu_id());
	VT_CHECK_LT(cpu, 2);
	if (cpu == 0) {
		timer_arm(0, ms_to_ticks(period_ms[0]));
		irq_unmask();
		wait_irqs(rearms[0], 5000, WAIT_SPIN);
		VT_CHECK_GE(vt_irqs, rearms[0]);
	} else {
		for (i = 0; i < rearms[1]; i++) {
			timer_arm_wfi(0, ms_to_ticks(period_ms[1]), 5000);
			VT_CHECK_GE(vt_irqs, i + 1);
		}
	}
	wait_irqs(rearms[cpu] + 1, 3 * period_ms[cpu], WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, rearms[cpu]);
	for (i = 0; i < rearms[cpu]; i++)
		VT_CHECK_EQ(vt_irq(i).pending, 1U << VT_TIMER_VIRT);
	vt_report(VT_VALUE, cpu << 8 | vt_irqs);
	return VT_EXIT_OK;
}
