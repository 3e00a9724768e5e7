// SPDX-License-Identifier: GPL-2.0
/* The C half of the QEMU-VMM guest runtime: UART, GICv2, IRQ dispatch, power-off. */
#include "qrt.h"

#define UART_BASE	0x09000000UL	/* PL011 */
#define UART_DR		0x00
#define UART_FR		0x18
#define UART_FR_TXFF	(1U << 5)

#define GICD_BASE	0x08000000UL
#define GICD_CTLR	0x000
#define GICD_ISENABLER	0x100
#define GICD_IPRIORITYR	0x400
#define GICC_BASE	0x08010000UL
#define GICC_CTLR	0x000
#define GICC_PMR	0x004
#define GICC_IAR	0x00c
#define GICC_EOIR	0x010
#define GIC_SPURIOUS	1023

#define PSCI_SYSTEM_OFF	0x84000008UL

volatile u64 qrt_irqs, qrt_spurious, qrt_other, qrt_early, qrt_max_late;

static inline void w32(u64 addr, u32 v) { *(volatile u32 *)addr = v; }
static inline u32 r32(u64 addr) { return *(volatile u32 *)addr; }

static void uart_putc(char c)
{
	while (r32(UART_BASE + UART_FR) & UART_FR_TXFF)
		;
	w32(UART_BASE + UART_DR, c);
}

void qrt_puts(const char *s)
{
	while (*s) {
		if (*s == '\n')
			uart_putc('\r');
		uart_putc(*s++);
	}
}

void qrt_put_dec(u64 v)
{
	char buf[24];
	int i = sizeof(buf) - 1;

	buf[i] = 0;
	do {
		buf[--i] = '0' + v % 10;
		v /= 10;
	} while (v);
	qrt_puts(buf + i);
}

static void put_kv(const char *key, u64 v)
{
	qrt_puts(" ");
	qrt_puts(key);
	qrt_puts("=");
	qrt_put_dec(v);
}

void qrt_note(const char *key, u64 value)
{
	qrt_puts(QRT_TAG);
	qrt_puts(qrt_test_name);
	qrt_puts(" note");
	put_kv(key, value);
	qrt_puts("\n");
}

static void __attribute__((noreturn)) system_off(void)
{
	register u64 x0 asm("x0") = PSCI_SYSTEM_OFF;

	asm volatile("hvc #0" : "+r"(x0) : : "memory");
	for (;;)
		wfi();
}

/* Group 0 on, PPI 27 enabled at a priority the CPU interface lets through. */
static void gic_init(void)
{
	w32(GICD_BASE + GICD_CTLR, 1);
	w32(GICD_BASE + GICD_IPRIORITYR + (QRT_VTIMER_INTID & ~3), 0xa0a0a0a0);
	w32(GICD_BASE + GICD_ISENABLER, 1U << QRT_VTIMER_INTID);
	w32(GICC_BASE + GICC_PMR, 0xf0);
	w32(GICC_BASE + GICC_CTLR, 1);
}

__attribute__((weak)) void qrt_timer_irq(void)
{
	timer_mask(0);
}

void timer_mask(int t)
{
	timer_ctl(t, CTL_ENABLE | CTL_IMASK);
}

/* From the IRQ vector: acknowledge, count, let the test quiesce the timer, EOI. */
void qrt_irq_entry(void)
{
	u64 now = cntvct();
	u32 iar = r32(GICC_BASE + GICC_IAR);
	u32 intid = iar & 0x3ff;

	if (intid == GIC_SPURIOUS) {
		qrt_spurious++;
		return;
	}
	if (intid == QRT_VTIMER_INTID) {
		u64 cval = timer_cval_read(0);

		if (!timer_istatus(0) || now < cval)
			qrt_early++;
		else if (now - cval > qrt_max_late)
			qrt_max_late = now - cval;
		qrt_irqs++;
		qrt_timer_irq();
	} else {
		qrt_other++;
	}
	w32(GICC_BASE + GICC_EOIR, iar);
}

int qrt_wait_irqs(u64 n, u64 timeout_ms, enum qrt_wait how)
{
	u64 end = cntvct() + ms_to_ticks(timeout_ms);

	while (qrt_irqs < n) {
		if (cntvct() >= end)
			return -1;
		if (how == QRT_MMIO)
			r32(UART_BASE + UART_FR);
	}
	return 0;
}

void qrt_bad_exception(u64 esr, u64 elr)
{
	qrt_puts(QRT_TAG);
	qrt_puts(qrt_test_name);
	put_kv("esr", esr);
	put_kv("elr", elr);
	qrt_puts(" FAIL bad-exception\n");
	system_off();
}

void qrt_main(void)
{
	int line;

	qrt_puts(QRT_TAG);
	qrt_puts(qrt_test_name);
	qrt_puts(" start");
	put_kv("cntfrq", cntfrq());
	qrt_puts("\n");
	gic_init();
	line = qrt_test();
	irq_mask();
	qrt_puts(QRT_TAG);
	qrt_puts(qrt_test_name);
	put_kv("irqs", qrt_irqs);
	put_kv("spurious", qrt_spurious);
	put_kv("other", qrt_other);
	put_kv("early", qrt_early);
	put_kv("max_late_us", qrt_max_late * 1000000 / cntfrq());
	if (line) {
		qrt_puts(" FAIL");
		put_kv("line", line);
		qrt_puts("\n");
	} else {
		qrt_puts(" ok\n");
	}
	system_off();
}
