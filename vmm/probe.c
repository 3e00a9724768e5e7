// SPDX-License-Identifier: GPL-2.0
/*
 * The ABI self-check /init runs before the suite: which ABI does the booted
 * kernel speak? It knows no revision: it looks, and the harness compares
 * what it saw with the revision's profile (harness/judge/abicheck.py).
 *
 * A probe VM with no in-kernel irqchip runs a guest of three instructions
 * built in here (a 64-bit store to an address with no memory slot, in a
 * loop), so every guest instruction that runs is a KVM_EXIT_MMIO. The VMM
 * arms the guest's timers itself with KVM_SET_ONE_REG (CVAL 0: behind the
 * counter, fires at once), so a kernel that never lets the guest run
 * while the vtimer's line is high (an exit storm) does not stop the probe;
 * the guest arms the physical timer itself (below), the vtimer masked. At each exit it looks at the
 * first PROBE_WORDS 64-bit words of s.regs and, for an exit that is neither
 * MMIO nor INTR (v4's KVM_EXIT_ARM_TIMER), at the first word of the exit
 * union. Phases, each bounded:
 *
 *   vtimer rise: CNTV_CVAL = 0, CNTV_CTL = ENABLE (KVM_SET_ONE_REG); the first exit where a
 *     bit is set that was clear before names where the vtimer shows:
 *     w<word>b<bit> in s.regs, x<reason>b<bit> in the exit union;
 *   vtimer fall: CNTV_CTL = ENABLE | IMASK until those bits clear again;
 *   ptimer rise: the guest arms CNTP_CVAL = 0, CNTP_CTL = ENABLE when the VMM
 *     sets its x2, and the same is looked for.
 *
 * One record (the format is versioned by its v= field; README "Trace records"):
 *
 *   abi v=1 status=ok cap=<KVM_CAP_ARM_USER_IRQ> vtimer=<locs|none>
 *       vexit=<reason> vfall=<reason|none> ptimer=<locs|none> pexit=<reason|->
 *       exits=<n> ms=<n>
 *   abi v=1 status=error cap=<n> msg="<what failed, with its values>"
 *
 * <locs> is every place the timer's rise showed at that exit, joined by '+'
 * (v5: w0b0+w1b0, its level and the history written at the forced notice).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <asm/ptrace.h>

#include "vt.h"

#define PROBE_WORDS	3	/* s.regs words looked at (v5 has three) */
#define PROBE_UNION	PROBE_WORDS	/* the view's slot for the exit union word */
#define PROBE_MIN_EXITS	200	/* a phase waits at least this many exits ... */
#define PROBE_MIN_MS	200	/* ... and this long for its timer to show */
#define PROBE_MAX_MS	1000	/* and never longer than this */

#define CTL_ENABLE	(1ULL << 0)
#define CTL_IMASK	(1ULL << 1)

/*
 * The probe's guest: stores to VT_PORT_BASE in a loop; once the VMM sets x2,
 * it arms its physical timer to fire at once (6.1 has no KVM_SET_ONE_REG for
 * the ptimer) and goes on storing.
 *
 *	movz	x1, #0x1000, lsl #16
 * 1:	cbnz	x2, 2f
 *	str	x0, [x1]
 *	b	1b
 * 2:	msr	cntp_cval_el0, xzr
 *	mov	x0, #1
 *	msr	cntp_ctl_el0, x0
 *	isb
 * 3:	str	x0, [x1]
 *	b	3b
 */
static const uint32_t probe_guest[] = {
	0xd2a20001, 0xb5000062, 0xf9000020, 0x17fffffe,
	0xd51be25f, 0xd2800020, 0xd51be220, 0xd5033fdf, 0xf9000020, 0x17ffffff,
};

struct probe {
	int kvm, vm, vcpu;
	struct kvm_run *run;
	void *ram;
	int cap;
	/* what the ABI shows: s.regs words, and the last dedicated exit's word */
	uint64_t view[PROBE_WORDS + 1];
	uint32_t dedicated;	/* that exit's reason (0: none seen) */
	uint32_t reason;	/* the last exit's reason */
	unsigned int exits;
	char msg[160];
};

/*
 * An assertion that carries its values: false (and p->msg set to the
 * failed condition and the values given) when cond does not hold.
 */
#define probe_check(p, cond, fmt, ...)					\
	({								\
		bool __ok = (cond);					\
		if (!__ok)						\
			snprintf((p)->msg, sizeof((p)->msg),		\
				 "%s: " fmt, #cond, ##__VA_ARGS__);	\
		__ok;							\
	})

static uint64_t core_reg(size_t off)
{
	return KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
	       (off / sizeof(uint32_t));
}

static int set_reg(struct probe *p, uint64_t id, uint64_t val)
{
	struct kvm_one_reg reg = { .id = id, .addr = (uint64_t)&val };
	int ret = ioctl(p->vcpu, KVM_SET_ONE_REG, &reg);

	if (!probe_check(p, ret == 0, "KVM_SET_ONE_REG id=0x%llx val=0x%llx errno=%d",
			 (unsigned long long)id, (unsigned long long)val, errno))
		return -1;
	return 0;
}

static int probe_vm(struct probe *p)
{
	struct kvm_userspace_memory_region mr = {
		.guest_phys_addr = VT_RAM_BASE,
		.memory_size = VT_RAM_SIZE,
	};
	struct kvm_vcpu_init init;
	uint64_t pstate = PSR_MODE_EL1h | PSR_D_BIT | PSR_A_BIT | PSR_I_BIT |
			  PSR_F_BIT;
	int size;

	p->vm = ioctl(p->kvm, KVM_CREATE_VM, 0);
	if (!probe_check(p, p->vm >= 0, "KVM_CREATE_VM errno=%d", errno))
		return -1;
	size = ioctl(p->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (!probe_check(p, size >= (int)sizeof(struct kvm_run), "mmap size=%d errno=%d",
			 size, errno))
		return -1;
	p->ram = mmap(NULL, VT_RAM_SIZE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!probe_check(p, p->ram != MAP_FAILED, "guest RAM errno=%d", errno))
		return -1;
	memcpy(p->ram, probe_guest, sizeof(probe_guest));
	mr.userspace_addr = (uint64_t)p->ram;
	if (!probe_check(p, !ioctl(p->vm, KVM_SET_USER_MEMORY_REGION, &mr),
			 "KVM_SET_USER_MEMORY_REGION errno=%d", errno))
		return -1;
	p->vcpu = ioctl(p->vm, KVM_CREATE_VCPU, 0);
	if (!probe_check(p, p->vcpu >= 0, "KVM_CREATE_VCPU errno=%d", errno))
		return -1;
	memset(&init, 0, sizeof(init));
	if (!probe_check(p, !ioctl(p->vm, KVM_ARM_PREFERRED_TARGET, &init) &&
			 !ioctl(p->vcpu, KVM_ARM_VCPU_INIT, &init),
			 "vCPU init target=%u errno=%d", init.target, errno))
		return -1;
	p->run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, p->vcpu, 0);
	if (!probe_check(p, p->run != MAP_FAILED, "kvm_run mmap errno=%d", errno))
		return -1;
	if (set_reg(p, core_reg(offsetof(struct kvm_regs, regs.pc)), VT_RAM_BASE) ||
	    set_reg(p, core_reg(offsetof(struct kvm_regs, regs.pstate)), pstate))
		return -1;
	return 0;
}

/* One KVM_RUN; the view is what this exit shows. */
static int probe_exit(struct probe *p)
{
	const char *sregs = (const char *)&p->run->s.regs;
	int ret = ioctl(p->vcpu, KVM_RUN, 0);
	int err = errno;
	uint32_t r = p->run->exit_reason;

	p->exits++;
	p->reason = r;
	if (!probe_check(p, ret == 0 || err == EINTR, "KVM_RUN ret=%d errno=%d reason=%u",
			 ret, err, r))
		return -1;
	memcpy(p->view, sregs, PROBE_WORDS * sizeof(uint64_t));
	if (r != KVM_EXIT_MMIO && r != KVM_EXIT_INTR) {
		/* neither the guest's store nor a forced notice: a dedicated exit */
		if (!probe_check(p, r > KVM_EXIT_NOTIFY || r == KVM_EXIT_UNKNOWN,
				 "an exit the probe guest cannot cause: reason=%u ret=%d", r, ret))
			return -1;
		memcpy(&p->view[PROBE_UNION], &p->run->mmio, sizeof(uint64_t));
		p->dedicated = r;
	}
	return 0;
}

static bool phase_over(const struct probe *p, unsigned int exits0, uint64_t t0)
{
	uint64_t ms = (now_ns() - t0) / 1000000;

	return ms >= PROBE_MAX_MS ||
	       (p->exits - exits0 >= PROBE_MIN_EXITS && ms >= PROBE_MIN_MS);
}

/* Append "<place>b<bit>" for every bit set in bits[]; returns how many. */
static int name_bits(const struct probe *p, const uint64_t *bits, char *s, size_t len)
{
	int w, b, n = 0;
	size_t used = 0;

	s[0] = '\0';
	for (w = 0; w <= PROBE_UNION; w++)
		for (b = 0; b < 64; b++) {
			if (!(bits[w] >> b & 1) || used >= len)
				continue;
			if (w == PROBE_UNION)
				used += snprintf(s + used, len - used, "%sx%ub%d", n ? "+" : "",
						 p->dedicated, b);
			else
				used += snprintf(s + used, len - used, "%sw%db%d", n ? "+" : "",
						 w, b);
			n++;
		}
	return n;
}

static int arm_vtimer(struct probe *p)
{
	if (set_reg(p, KVM_REG_ARM_TIMER_CVAL, 0) ||
	    set_reg(p, KVM_REG_ARM_TIMER_CTL, CTL_ENABLE))
		return -1;
	return 0;
}

static int arm_ptimer(struct probe *p)
{
	return set_reg(p, core_reg(offsetof(struct kvm_regs, regs.regs[2])), 1);
}

/*
 * Arm a timer to fire at once and run until a bit that was clear shows;
 * *rose gets those bits, locs their names ("none": never).
 */
static int phase_rise(struct probe *p, int (*arm)(struct probe *p), uint64_t *rose,
		      char *locs, size_t len, const char **exit)
{
	uint64_t before[PROBE_WORDS + 1], t0 = now_ns();
	unsigned int exits0 = p->exits;
	int w;

	memcpy(before, p->view, sizeof(before));
	if (arm(p))
		return -1;
	while (!phase_over(p, exits0, t0)) {
		if (probe_exit(p))
			return -1;
		for (w = 0; w <= PROBE_UNION; w++)
			rose[w] = p->view[w] & ~before[w];
		if (name_bits(p, rose, locs, len)) {
			*exit = exit_reason_name(p->reason);
			return 0;
		}
	}
	snprintf(locs, len, "none");
	*exit = "-";
	return 0;
}

/* Mask the vtimer and run until the bits its rise set are clear again. */
static int phase_fall(struct probe *p, const uint64_t *rose, const char **exit)
{
	uint64_t t0 = now_ns();
	unsigned int exits0 = p->exits;
	bool high;
	int w;

	*exit = "none";
	if (set_reg(p, KVM_REG_ARM_TIMER_CTL, CTL_ENABLE | CTL_IMASK))
		return -1;
	while (!phase_over(p, exits0, t0)) {
		if (probe_exit(p))
			return -1;
		for (high = false, w = 0; w <= PROBE_UNION; w++)
			high |= !!(p->view[w] & rose[w]);
		if (!high) {
			*exit = exit_reason_name(p->reason);
			return 0;
		}
	}
	return 0;
}

static int probe_run(struct probe *p)
{
	uint64_t vrose[PROBE_WORDS + 1] = { 0 }, prose[PROBE_WORDS + 1] = { 0 };
	const char *vexit, *vfall = "-", *pexit;
	char vlocs[96], plocs[96];
	uint64_t t0 = now_ns();
	int i;

	p->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (!probe_check(p, p->kvm >= 0, "open /dev/kvm errno=%d", errno))
		return -1;
	p->cap = ioctl(p->kvm, KVM_CHECK_EXTENSION, KVM_CAP_ARM_USER_IRQ);
	if (!probe_check(p, p->cap > 0, "KVM_CAP_ARM_USER_IRQ cap=%d", p->cap))
		return -1;
	if (probe_vm(p))
		return -1;
	/* a few exits with no timer armed: what the words hold anyway */
	for (i = 0; i < 3; i++)
		if (probe_exit(p))
			return -1;
	if (phase_rise(p, arm_vtimer, vrose, vlocs, sizeof(vlocs), &vexit))
		return -1;
	if (strcmp(vlocs, "none") && phase_fall(p, vrose, &vfall))
		return -1;
	if (phase_rise(p, arm_ptimer, prose, plocs, sizeof(plocs), &pexit))
		return -1;
	rec_emit("-", "abi",
		 "v=1 status=ok cap=%d vtimer=%s vexit=%s vfall=%s ptimer=%s pexit=%s exits=%u ms=%llu",
		 p->cap, vlocs, vexit, vfall, plocs, pexit, p->exits,
		 (unsigned long long)(now_ns() - t0) / 1000000);
	return 0;
}

/* Run the probe and write its record; the caller bounds it (a child of /init). */
int abi_probe(void)
{
	struct probe p = { .kvm = -1, .vm = -1, .vcpu = -1, .cap = -1 };

	if (!probe_run(&p))
		return 0;
	rec_emit("-", "abi", "v=1 status=error cap=%d exits=%u msg=\"%s\"", p.cap, p.exits, p.msg);
	return 1;
}
