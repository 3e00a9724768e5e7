/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Entry and vectors of the guest runtime for tests run under QEMU as the VMM.
 * QEMU loads the ELF and enters _start at EL1h, MMU off, DAIF masked. The
 * stack is in .bss, so the image does not depend on the machine's RAM size.
 */
#include "vectors.h"

#define STACK_SIZE	(16 << 10)

	.bss
	.balign	16
	.space	STACK_SIZE
stack_top:

	.section .text.start, "ax"
	.global _start
_start:
	ldr	x1, =__bss_start
	ldr	x2, =__bss_end
1:	cmp	x1, x2
	b.hs	2f
	str	xzr, [x1], #8
	b	1b
2:	ldr	x1, =stack_top
	mov	sp, x1
	adr	x1, vectors
	msr	vbar_el1, x1
	isb
	bl	qrt_main
3:	wfi			/* qrt_main powers off; not reached */
	b	3b

	VECTORS qrt_irq_entry, bad_exception

bad_exception:
	mrs	x0, esr_el1
	mrs	x1, elr_el1
	b	qrt_bad_exception
