/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The report ports between a guest test and the VMM. Shared by the guest
 * runtime and the VMM; the Python record parser knows the names below.
 *
 * A guest reports an event by a 64-bit store to VT_PORT_BASE + 8 * port.
 * The address has no memory slot, so every store is a KVM_EXIT_MMIO.
 */
#ifndef VT_PORTS_H
#define VT_PORTS_H

#ifdef __ASSEMBLER__
#define _VT_UL(x)	x
#else
#define _VT_UL(x)	x##UL
#endif

#define VT_PORT_BASE	_VT_UL(0x10000000)
#define VT_RAM_BASE	_VT_UL(0x40000000)
#define VT_RAM_SIZE	_VT_UL(0x00200000)
#define VT_STACK_SIZE	_VT_UL(0x00010000)	/* per vCPU, from the top of RAM */
#define VT_MAX_VCPUS	4

#define VT_PORTS(X)							\
	X(EXIT,		0)	/* guest done; value: exit code (0 ok) */	\
	X(IRQ,		1)	/* IRQ handler entry; value: pending timers */	\
	X(ARM,		2)	/* timer armed; value: timer (0 virt, 1 phys) */\
	X(HBEAT,	3)	/* spin-loop heartbeat; value: iteration */	\
	X(MARK,		4)	/* test-defined phase marker */			\
	X(VALUE,	5)	/* test-defined value */			\
	X(FAIL,		6)	/* guest check failed; value: see VT_FAIL_* */	\
	X(BADEXC,	7)	/* unexpected exception; value: ESR_EL1 */	\
	X(SPURIOUS,	8)	/* IRQ with no timer pending; value: CTLs */	\
	X(WAKE,		9)	/* WFI returned; value: IRQs so far, VT_WAKE_EARLY */ \
	X(DISARM,	10)	/* timer masked/disabled; value: timer */	\
	X(CNT,		11)	/* a counter reading; value: CNTVCT */	\
	X(SAVE,		12)	/* VMM: save and restore the vtimer; value: 0 */ \
	X(EXPECTED,	13)	/* a failed VT_CHECK_<OP>: the expected side */	\
	X(OBSERVED,	14)	/* then its observed side, then VT_FAIL */

#ifdef __ASSEMBLER__
#define VT_PORT_EQU(name, nr) .equ VT_##name, nr;
#else
#define VT_PORT_ENUM(name, nr) VT_##name = (nr),
enum vt_port { VT_PORTS(VT_PORT_ENUM) VT_NR_PORTS };
#undef VT_PORT_ENUM
#endif

/*
 * The VT_IRQ value: the counter at handler entry, shifted left by
 * VT_IRQ_CNT_SHIFT, over the bits of the timers pending then.
 */
#define VT_IRQ_CNT_SHIFT	4
#define VT_TIMER_VIRT	0
#define VT_TIMER_PHYS	1

/* VT_ARM value bit: timer_arm_wfi() arms next, then sleeps with no exit between. */
#define VT_ARM_WFI	_VT_UL(0x100)
/* VT_WAKE value bit: the timer had fired before the vCPU got to its WFI. */
#define VT_WAKE_EARLY_BIT	32
#define VT_WAKE_EARLY	(_VT_UL(1) << VT_WAKE_EARLY_BIT)

/*
 * The VT_FAIL value. Bits 0-31: the line of the check; bit 32 set: the check
 * is in runtime.c, else in the test's own source. A guest built before
 * VT_CHECK_<OP> leaves bits 40-63 zero. Otherwise bits 40-43 say which
 * comparison failed (VT_CMP_*, 0 for a plain VT_CHECK(cond)), bit 44 that
 * its operands compared as signed, and bits 48-63 are vt_check_hash() of the
 * check's text as the preprocessor stringifies it (#cond, or #a ", " #b):
 * the harness shows the check from the source only if that line still holds
 * it. A failed VT_CHECK_<OP> reports VT_EXPECTED and VT_OBSERVED first.
 */
#define VT_FAIL_FILE_SHIFT	32
#define VT_FAIL_OP_SHIFT	40
#define VT_FAIL_SIGNED_SHIFT	44
#define VT_FAIL_HASH_SHIFT	48

/* The comparisons of VT_CHECK_<name>(observed, expected): name, code, C operator. */
#define VT_CMPS(X)		\
	X(EQ,	1,	==)	\
	X(NE,	2,	!=)	\
	X(LT,	3,	<)	\
	X(LE,	4,	<=)	\
	X(GT,	5,	>)	\
	X(GE,	6,	>=)

/* Guest exit codes (VT_EXIT value). */
#define VT_EXIT_OK	0
#define VT_EXIT_FAIL	1	/* a guest assertion failed (see VT_FAIL) */
#define VT_EXIT_TIMEOUT	2	/* the guest's own bounded wait ran out */

#endif
