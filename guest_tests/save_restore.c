// SPDX-License-Identifier: GPL-2.0
/*
 * Save/restore of the virtual timer, as a live migration does it: at the
 * guest's VT_SAVE report the VMM reads CTL, CVAL and CNT with
 * KVM_GET_ONE_REG, waits 30 ms (spec: vmm.downtime_ms) and writes them
 * back. The guest's counter must not see the downtime: its virtual
 * counter falls at least the downtime behind the physical one.
 * 1. While pending (IRQs masked, line high): the level survives (the
 *    spec counts one edge for it), then one IRQ on unmask.
 * 2. While armed 20 ms ahead: it fires at CVAL of the restored counter.
 */
#include "guest.h"

#define DOWNTIME_MS	30	/* the spec's vmm.downtime_ms */

/*
 * Migrate; returns the counter time hidden from the guest: how far its
 * virtual counter fell behind the physical one across the migration (the
 * VMM restores CNT, i.e. moves CNTVOFF; CNTPCT runs on). Unlike the virtual
 * time seen across it, this does not grow when a loaded host is slow to
 * take the exit.
 */
static u64 migrate(void)
{
	u64 v0 = cntvct(), p0 = cntpct(), v1, p1;

	vt_report(VT_SAVE, 0);
	v1 = cntvct();
	p1 = cntpct();
	vt_report(VT_VALUE, (p1 - p0) - (v1 - v0));
	return (p1 - p0) - (v1 - v0);
}

int vt_main(unsigned int cpu)
{
	u64 cval, hidden;

	(void)cpu;
	/* 1: pending */
	timer_arm(0, 0);
	cval = timer_cval_read(0);
	VT_CHECK(wait_istatus(0, 100) == 0);
	vt_report(VT_MARK, 1);		/* the line shows high */
	hidden = migrate();
	VT_CHECK_GE(hidden + ms_to_ticks(1), ms_to_ticks(DOWNTIME_MS));
	VT_CHECK_EQ(timer_ctl_read(0), CTL_ENABLE | CTL_ISTATUS);
	VT_CHECK_EQ(timer_cval_read(0), cval);
	vt_report(VT_MARK, 2);		/* still high: no second edge */
	irq_unmask();
	wait_irqs(1, 2000, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, 1);

	/* 2: armed, not yet fired */
	timer_arm(0, ms_to_ticks(20));
	cval = timer_cval_read(0);
	hidden = migrate();
	VT_CHECK_GE(hidden + ms_to_ticks(1), ms_to_ticks(DOWNTIME_MS));
	VT_CHECK_EQ(timer_cval_read(0), cval);
	VT_CHECK(timer_istatus(0) || cntvct() < cval);	/* a slow host may take 20 ms */
	wait_irqs(2, 2000, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, 2);
	VT_CHECK_GE(vt_irq(1).cnt, cval);
	wait_irqs(3, 20, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, 2);
	return VT_EXIT_OK;
}
