/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Exception vectors shared by the guest runtimes (assembler only):
 * VECTORS irq, bad emits a 2 KiB-aligned table "vectors" whose IRQ entry
 * (current EL, SPx) saves the caller-saved registers, calls C function irq
 * and returns with eret; every other entry branches to bad.
 */
#ifndef VT_VECTORS_H
#define VT_VECTORS_H

	/* save the caller-saved registers, call \handler, restore, eret */
	.macro	vt_entry handler
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

	.macro	vt_vector target
	.balign	0x80
	b	\target
	.endm

	.macro	VECTORS irq, bad
	.balign	0x800
vectors:
	.irp	n, 0, 1, 2, 3, 4	/* current EL SP0 (4), SPx sync */
	vt_vector \bad
	.endr
	vt_vector .Lirq_entry\@	/* current EL, SPx: IRQ */
	.irp	n, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15	/* FIQ, SError, lower ELs */
	vt_vector \bad
	.endr
.Lirq_entry\@:
	vt_entry \irq
	.endm

#endif
