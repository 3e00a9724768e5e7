// SPDX-License-Identifier: GPL-2.0
/*
 * One small table entry per revision's ABI: where the timer line shows in
 * struct kvm_run and which exit is the ABI's own notice. The run loop in
 * vm.c is shared by all of them.
 *
 * The layouts of v4, v5 and v6 come from kernel_patches/<rev>/ (their
 * uapi changes); this file is built against the unpatched 6.1 headers, so
 * it reads those fields by offset.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "vt.h"

#define TIMER_VIRT	(1ULL << 0)
#define TIMER_PHYS	(1ULL << 1)

/* v4: a dedicated exit reason carrying the bitmap in the exit union */
#define KVM_EXIT_ARM_TIMER_V4	64

static uint64_t sync_word(const struct kvm_run *run, int i)
{
	uint64_t v;

	memcpy(&v, (const char *)&run->s.regs + 8 * i, sizeof(v));
	return v;
}

static bool eintr_notice(const struct kvm_run *run, int ret, int err)
{
	return ret < 0 && err == EINTR && run->exit_reason == KVM_EXIT_INTR;
}

/* upstream (4.12+): s.regs.device_irq_level, VTIMER bit 0, PTIMER bit 1 */
static bool upstream_level(const struct kvm_run *run, uint64_t *level)
{
	*level = run->s.regs.device_irq_level & (KVM_ARM_DEV_EL1_VTIMER |
						 KVM_ARM_DEV_EL1_PTIMER);
	return true;
}

/* v5 and v6: s.regs.kernel_timer_pending (word 0), VTIMER bit 0 */
static bool pending_level(const struct kvm_run *run, uint64_t *level)
{
	*level = sync_word(run, 0) & TIMER_VIRT;
	return true;
}

/* v5: s.regs.user_timer_pending (word 1), the level of the last notice */
static bool v5_history(const struct kvm_run *run, uint64_t *hist)
{
	*hist = sync_word(run, 1) & TIMER_VIRT;
	return true;
}

/* v4: only its own exit shows the line */
static bool v4_notice(const struct kvm_run *run, int ret, int err)
{
	(void)err;
	return ret == 0 && run->exit_reason == KVM_EXIT_ARM_TIMER_V4;
}

static bool v4_level(const struct kvm_run *run, uint64_t *level)
{
	uint64_t v;

	if (run->exit_reason != KVM_EXIT_ARM_TIMER_V4)
		return false;
	memcpy(&v, &run->mmio, sizeof(v));
	*level = v & TIMER_VIRT;
	return true;
}

static const struct vt_abi abis[] = {
	{ "upstream", TIMER_VIRT | TIMER_PHYS, upstream_level, eintr_notice, NULL },
	{ "v4", TIMER_VIRT, v4_level, v4_notice, NULL },
	{ "v5", TIMER_VIRT, pending_level, eintr_notice, v5_history },
	{ "v6", TIMER_VIRT, pending_level, eintr_notice, NULL },
};

const struct vt_abi *abi_find(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(abis); i++)
		if (!strcmp(abis[i].name, name))
			return &abis[i];
	return NULL;
}

const char *exit_reason_name(uint32_t reason)
{
	switch (reason) {
	case KVM_EXIT_UNKNOWN:		return "UNKNOWN";
	case KVM_EXIT_MMIO:		return "MMIO";
	case KVM_EXIT_INTR:		return "INTR";
	case KVM_EXIT_FAIL_ENTRY:	return "FAIL_ENTRY";
	case KVM_EXIT_INTERNAL_ERROR:	return "INTERNAL_ERROR";
	case KVM_EXIT_SYSTEM_EVENT:	return "SYSTEM_EVENT";
	case KVM_EXIT_ARM_NISV:		return "ARM_NISV";
	case KVM_EXIT_DEBUG:		return "DEBUG";
	case KVM_EXIT_HYPERCALL:	return "HYPERCALL";
	case KVM_EXIT_ARM_TIMER_V4:	return "ARM_TIMER";
	default:			return "OTHER";
	}
}
