/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Entry and exception vectors of the bare-metal guest runtime.
 * The VMM enters every vCPU at _start, EL1h, MMU off, DAIF masked,
 * with x0 = vCPU index (kept in TPIDR_EL1). Each vCPU gets VT_STACK_SIZE of stack from the top
 * of RAM.
 */
#include "vt_ports.h"

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

	/* save the caller-saved registers, call \handler, restore, eret */
	.macro	entry handler
	stp	x0, x1, [sp, #-176]!
	stp	x2, x3, [sp, #16]
	stp	x4, x5, [sp, #32]
	stp	x6, x7, [sp, #48]
	stp	x8, x9, [sp, #64]
	stp	x10, x11, [sp, #80]
	stp	x12, x13, [sp, #96]
	stp	x14, x15, [sp, #112]
	stp	x16, x17, [sp, #128]
	stp	x18, x29, [sp, #144]
	str	x30, [sp, #160]
	bl	\handler
	ldp	x2, x3, [sp, #16]
	ldp	x4, x5, [sp, #32]
	ldp	x6, x7, [sp, #48]
	ldp	x8, x9, [sp, #64]
	ldp	x10, x11, [sp, #80]
	ldp	x12, x13, [sp, #96]
	ldp	x14, x15, [sp, #112]
	ldp	x16, x17, [sp, #128]
	ldp	x18, x29, [sp, #144]
	ldr	x30, [sp, #160]
	ldp	x0, x1, [sp], #176
	eret
	.endm

	.macro	vector target
	.balign	0x80
	b	\target
	.endm

	.balign	0x800
vectors:
	vector	bad_exception	/* current EL, SP0 */
	vector	bad_exception
	vector	bad_exception
	vector	bad_exception
	vector	bad_exception	/* current EL, SPx: sync */
	vector	irq_entry	/* current EL, SPx: IRQ */
	vector	bad_exception	/* FIQ */
	vector	bad_exception	/* SError */
	vector	bad_exception	/* lower EL, AArch64 */
	vector	bad_exception
	vector	bad_exception
	vector	bad_exception
	vector	bad_exception	/* lower EL, AArch32 */
	vector	bad_exception
	vector	bad_exception
	vector	bad_exception

irq_entry:
	entry	vt_irq_entry

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
