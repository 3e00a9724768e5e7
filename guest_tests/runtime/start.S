/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Entry and exception vectors of the bare-metal guest runtime.
 * The VMM enters every vCPU at _start, EL1h, MMU off, DAIF masked,
 * with x0 = vCPU index (kept in TPIDR_EL1). Each vCPU gets VT_STACK_SIZE of stack from the top
 * of RAM.
 */
#include "vt_ports.h"
#include "vectors.h"

VT_PORTS(VT_PORT_EQU)

	.section .text.start, "ax"
	.global _start
_start:
	msr	tpidr_el1, x0		/* the vCPU index, for cpu_id() */
	ldr	x1, =(VT_RAM_BASE + VT_RAM_SIZE)
	mov	x2, #VT_STACK_SIZE
	msub	x1, x0, x2, x1
	mov	sp, x1
	adr	x1, vectors
	msr	vbar_el1, x1
	isb
	bl	vt_main
	/* vt_main returned: report its value as the exit code */
	ldr	x1, =(VT_PORT_BASE + 8 * VT_EXIT)
	str	x0, [x1]
1:	wfi
	b	1b

	VECTORS vt_irq_entry, bad_exception

bad_exception:
	mrs	x0, esr_el1
	ldr	x1, =(VT_PORT_BASE + 8 * VT_BADEXC)
	str	x0, [x1]
	mrs	x0, elr_el1
	ldr	x1, =(VT_PORT_BASE + 8 * VT_VALUE)
	str	x0, [x1]
	mov	x0, #VT_EXIT_FAIL
	ldr	x1, =(VT_PORT_BASE + 8 * VT_EXIT)
	str	x0, [x1]
2:	wfi
	b	2b
