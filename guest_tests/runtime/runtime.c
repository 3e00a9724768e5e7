// SPDX-License-Identifier: GPL-2.0
/* The C half of the guest runtime: IRQ dispatch and waiting helpers. */
#define VT_CHECK_FILE	1
#include "guest.h"

volatile u64 vt_irq_count[VT_MAX_VCPUS];
volatile struct vt_irq_rec vt_irq_log[VT_MAX_VCPUS][VT_IRQ_LOG];
static u64 spurious[VT_MAX_VCPUS];
static unsigned int rearmed[VT_MAX_VCPUS];	/* timers timer_rearm() left masked */

/* After this many IRQs with no timer pending the line is stuck high. */
#define SPURIOUS_LIMIT	3
#define PSR_I_BIT	(1UL << 7)

u32 vt_check_hash(const char *s)
{
	u32 h = 2166136261U;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 16777619U;
	h = (h ^ h >> 16) & 0xffff;
	return h ? h : 1;
}

void vt_check_failed(u64 where, enum vt_cmp cmp, bool is_signed, const char *text,
		     u64 observed, u64 expected)
{
	if (cmp != VT_CMP_NONE) {
		vt_report(VT_EXPECTED, expected);
		vt_report(VT_OBSERVED, observed);
	}
	vt_report(VT_FAIL, where | (u64)cmp << VT_FAIL_OP_SHIFT |
		  (u64)is_signed << VT_FAIL_SIGNED_SHIFT |
		  (u64)vt_check_hash(text) << VT_FAIL_HASH_SHIFT);
}

static unsigned int timers_pending(void)
{
	unsigned int pending = 0;
	int t;

	for (t = 0; t < 2; t++) {
		u64 ctl = timer_ctl_read(t);

		if ((ctl & CTL_ENABLE) && (ctl & CTL_ISTATUS) && !(ctl & CTL_IMASK))
			pending |= 1U << t;
	}
	return pending;
}

void timer_arm(int t, u64 delta)
{
	timer_cval(t, timer_now(t) + delta);
	timer_ctl(t, CTL_ENABLE);
	vt_report(VT_ARM, t);
}

void timer_rearm(int t, u64 delta)
{
	timer_ctl(t, CTL_ENABLE | CTL_IMASK);	/* first: a stall before the next write makes no edge */
	timer_cval(t, timer_now(t) + delta);
	rearmed[cpu_id()] |= 1U << t;
}

void timer_mask(int t)
{
	timer_ctl(t, CTL_ENABLE | CTL_IMASK);
}

__attribute__((weak)) void vt_timer_irq(unsigned int pending)
{
	int t;

	for (t = 0; t < 2; t++)
		if (pending & (1U << t))
			timer_mask(t);
}

/*
 * Called from the IRQ vector. The report comes after the test's handler
 * has quiesced the timer, so the exit it causes already carries the
 * lowered level and the VMM can drop the line before the guest runs on.
 */
void vt_irq_entry(void)
{
	u64 now = cntvct();
	unsigned int pending = timers_pending();
	int t;

	if (!pending) {
		vt_report(VT_SPURIOUS, timer_ctl_read(0) | timer_ctl_read(1) << 8);
		/*
		 * User space left the line high with no timer pending. Stop the
		 * storm: return with IRQs masked, so the test's bounded wait
		 * ends it with a verdict instead of the watchdog.
		 */
		if (++spurious[cpu_id()] >= SPURIOUS_LIMIT)
			sysreg_write(spsr_el1, sysreg_read(spsr_el1) | PSR_I_BIT);
		return;
	}
	if (vt_irqs < VT_IRQ_LOG) {
		vt_irq(vt_irqs).cnt = now;
		vt_irq(vt_irqs).pending = pending;
	}
	vt_irqs++;
	vt_timer_irq(pending);
	vt_report(VT_IRQ, now << VT_IRQ_CNT_SHIFT | pending);
	/*
	 * Timers the handler re-armed stay masked until the report is out, so
	 * its exit shows the line low even when the new deadline has already
	 * passed (a stalled host): a fire that early is then a new rise the
	 * VMM sees, not a line that never dropped.
	 */
	for (t = 0; t < 2; t++)
		if (rearmed[cpu_id()] & (1U << t))
			timer_ctl(t, CTL_ENABLE);
	rearmed[cpu_id()] = 0;
}

/*
 * One WFI sleep until vt_irqs reaches n. IRQs are masked from the check to
 * the WFI: an IRQ taken between them would leave the vCPU asleep with its
 * timer already quiesced (a lost wake-up). WFI still returns on a pending
 * IRQ while PSTATE.I masks it; the IRQ is taken at the unmask after it.
 * The VT_WAKE report carries the IRQs so far and VT_WAKE_EARLY if the
 * timer had already fired when the vCPU got to the WFI.
 */
static void sleep_once(u64 n, u64 early)
{
	bool slept = false;

	irq_mask();
	if (vt_irqs < n) {
		wfi();
		slept = true;
	}
	irq_unmask();
	isb();
	if (slept)
		vt_report(VT_WAKE, (early ? VT_WAKE_EARLY : 0) | vt_irqs);
}

int timer_arm_wfi(int t, u64 delta, u64 timeout_ms)
{
	u64 n = vt_irqs + 1, end, early;

	vt_report(VT_ARM, VT_ARM_WFI | t);
	irq_mask();
	end = cntvct() + ms_to_ticks(timeout_ms);
	timer_cval(t, timer_now(t) + delta);
	timer_ctl(t, CTL_ENABLE);
	early = timer_istatus(t);
	while (vt_irqs < n) {
		if (cntvct() > end)
			return -1;
		sleep_once(n, early);
	}
	return 0;
}

int wait_irqs(u64 n, u64 timeout_ms, enum vt_wait how)
{
	u64 now = cntvct(), end = now + ms_to_ticks(timeout_ms);
	u64 beat = now + ms_to_ticks(VT_BEAT_MS);
	u64 beats = 0, min_beats = how == WAIT_BEAT ? timeout_ms / VT_BEAT_MS : 0;
	u64 i = 0;

	while (vt_irqs < n) {
		now = cntvct();
		if (now > end && beats >= min_beats)
			return -1;
		if (how == WAIT_MMIO) {
			vt_report(VT_HBEAT, i);
		} else if (how == WAIT_WFI) {
			sleep_once(n, 0);
		} else if (how == WAIT_BEAT && now >= beat) {
			vt_report(VT_HBEAT, i);
			beat = now + ms_to_ticks(VT_BEAT_MS);
			beats++;
		}
		i++;
	}
	return 0;
}

void spin_ms(u64 ms)
{
	u64 end = cntvct() + ms_to_ticks(ms);

	while (cntvct() < end)
		;
}

u64 spin_heartbeat(u64 ms, u64 period_ms)
{
	u64 now = cntvct(), end = now + ms_to_ticks(ms);
	u64 beat = now + ms_to_ticks(period_ms);
	u64 beats = 0, min_beats = ms / period_ms;
	u64 i;

	for (i = 0; now < end || beats < min_beats; i++) {
		now = cntvct();
		if (now >= beat) {
			vt_report(VT_HBEAT, i);
			beat = now + ms_to_ticks(period_ms);
			beats++;
		}
	}
	return i;
}

int wait_istatus(int t, u64 timeout_ms)
{
	u64 end = cntvct() + ms_to_ticks(timeout_ms);

	while (!timer_istatus(t))
		if (cntvct() > end)
			return -1;
	return 0;
}

static u64 periodic_n, periodic_ms;

void periodic_vtimer_irq(unsigned int pending)
{
	if (!(pending & (1U << VT_TIMER_VIRT)))
		return;
	if (vt_irqs < periodic_n)
		timer_rearm(0, ms_to_ticks(periodic_ms));
	else
		timer_mask(0);
}

int periodic_vtimer(u64 n, u64 period_ms)
{
	periodic_n = n;
	periodic_ms = period_ms;
	timer_arm(0, ms_to_ticks(period_ms));
	irq_unmask();
	wait_irqs(n, 5000, WAIT_SPIN);
	VT_CHECK_GE(vt_irqs, n);
	wait_irqs(n + 1, 3 * period_ms, WAIT_SPIN);
	VT_CHECK_EQ(vt_irqs, n);
	return VT_EXIT_OK;
}
