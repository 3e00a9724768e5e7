// SPDX-License-Identifier: GPL-2.0
/*
 * Two vCPUs, each with its own virtual timer and its own IRQ line.
 * vCPU 0 re-arms its timer 4 ms ahead 3 times and spins with no exits;
 * vCPU 1 re-arms 7 ms ahead 2 times and waits in WFI. Each takes exactly
 * its own IRQs: the lines are kept apart.
 */
#include "guest.h"

static const u64 rearms[2] = { 3, 2 };
static const u64 period_ms[2] = { 4, 7 };

void vt_timer_irq(unsigned int pending)
{
	unsigned int cpu = cpu_id();

	if (!(pending & (1U << VT_TIMER_VIRT)))
		return;
	if (vt_irqs < rearms[cpu])
		timer_cval(0, cntvct() + ms_to_ticks(period_ms[cpu]));
	else
		timer_mask(0);
}

int vt_main(unsigned int cpu)
{
	u64 i;

	VT_CHECK(cpu == cpu_id() && cpu < 2);
	timer_arm(0, ms_to_ticks(period_ms[cpu]));
	irq_unmask();
	VT_CHECK(wait_irqs(rearms[cpu], 5000, cpu ? WAIT_WFI : WAIT_SPIN) == 0);
	wait_irqs(rearms[cpu] + 1, 3 * period_ms[cpu], WAIT_SPIN);
	VT_CHECK(vt_irqs == rearms[cpu]);
	for (i = 0; i < rearms[cpu]; i++)
		VT_CHECK(vt_irq(i).pending == 1U << VT_TIMER_VIRT);
	vt_report(VT_VALUE, cpu << 8 | vt_irqs);
	return VT_EXIT_OK;
}
