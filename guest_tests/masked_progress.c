// SPDX-License-Identifier: GPL-2.0
/*
 * The guest keeps IRQs masked (PSTATE.I) for 100 ms while its timer line
 * is high: it must keep running (no exit storm), counting loop iterations
 * and reporting them in a heartbeat every 5 ms. Then it unmasks and takes
 * exactly one IRQ.
 */
#include "guest.h"

#define MASKED_MS	100
#define MIN_ITERS	1000	/* far below what 100 ms of guest time runs */

int vt_main(unsigned int cpu)
{
	u64 iters;

	(void)cpu;
	timer_arm(0, 0);
	VT_CHECK(wait_istatus(0, 100) == 0);
	iters = spin_heartbeat(MASKED_MS, VT_BEAT_MS);
	VT_CHECK_GE(iters, MIN_ITERS);
	VT_CHECK_EQ(vt_irqs, 0);
	VT_CHECK(timer_istatus(0));
	vt_report(VT_VALUE, iters);
	irq_unmask();
	wait_irqs(1, 100, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, 1);
	wait_irqs(2, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 1);
	return VT_EXIT_OK;
}
