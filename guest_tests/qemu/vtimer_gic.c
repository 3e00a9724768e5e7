// SPDX-License-Identifier: GPL-2.0
/*
 * The virtual timer under QEMU as the VMM, through its emulated GICv2:
 * the handler re-arms the timer 5 ms ahead until 5 IRQs were taken while
 * the guest spins with no exits (only forced exits can tell QEMU of the
 * rises); then one more IRQ wakes the vCPU from WFI; then one comes while
 * the guest reads the UART in a loop (the rise may ride on an MMIO exit).
 */
#include "qrt.h"

#define REARM_N		5
#define PERIOD_MS	5

const char qrt_test_name[] = "vtimer_gic";

void qrt_timer_irq(void)
{
	if (qrt_irqs < REARM_N)
		timer_cval(0, cntvct() + ms_to_ticks(PERIOD_MS));
	else
		timer_mask(0);
}

int qrt_test(void)
{
	u64 end;

	timer_cval(0, cntvct() + ms_to_ticks(PERIOD_MS));
	timer_ctl(0, CTL_ENABLE);
	irq_unmask();
	QRT_CHECK(qrt_wait_irqs(REARM_N, 5000, QRT_SPIN) == 0);
	qrt_wait_irqs(REARM_N + 1, 3 * PERIOD_MS, QRT_SPIN);
	QRT_CHECK(qrt_irqs == REARM_N);
	qrt_note("rearm_irqs", qrt_irqs);

	/* one-shot with the vCPU in WFI: the timer itself must wake it */
	timer_cval(0, cntvct() + ms_to_ticks(PERIOD_MS));
	timer_ctl(0, CTL_ENABLE);
	end = cntvct() + ms_to_ticks(5000);
	irq_mask();	/* a pending IRQ still ends WFI: no lost wake-up between check and WFI */
	while (qrt_irqs == REARM_N && cntvct() < end) {
		wfi();
		irq_unmask();
		isb();
		irq_mask();
	}
	irq_unmask();
	QRT_CHECK(qrt_irqs == REARM_N + 1);

	/* one-shot while the vCPU exits to QEMU on every iteration */
	timer_cval(0, cntvct() + ms_to_ticks(10));
	timer_ctl(0, CTL_ENABLE);
	QRT_CHECK(qrt_wait_irqs(REARM_N + 2, 2000, QRT_MMIO) == 0);
	qrt_wait_irqs(REARM_N + 3, 20, QRT_SPIN);
	QRT_CHECK(qrt_irqs == REARM_N + 2);
	QRT_CHECK(qrt_spurious == 0 && qrt_other == 0 && qrt_early == 0);
	return 0;
}
