// SPDX-License-Identifier: GPL-2.0
/* A guest that never ends: IRQs masked, no exits. Only the watchdog stops it. */
#include "guest.h"

int vt_main(unsigned int cpu)
{
	(void)cpu;
	for (;;)
		asm volatile("" : : : "memory");
	return VT_EXIT_OK;
}
