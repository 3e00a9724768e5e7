/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What /init accepts on a suite manifest line, and what the VMM keeps of a
 * test. The one source of these numbers: harness/inputs/limits.py reads this file,
 * so the spec loader accepts exactly what /init accepts.
 */
#ifndef VT_LIMITS_H
#define VT_LIMITS_H

#define VT_LINE_MAX		512	/* a manifest line, newline included */
#define VT_NAME_MAX		63	/* a test's name */
#define VT_IMAGE_MAX		255	/* a guest image's path */
#define VT_TIMEOUT_MS_MAX	3600000	/* the watchdog */
#define VT_INJECT_DELAY_MS_MAX	60000
#define VT_ALARM_US_MAX		10000000
#define VT_DOWNTIME_MS_MAX	60000
#define VT_FAULT_COUNT_MAX	1000000	/* crash_after_exits, garble_record */

/*
 * What one test writes at most (a healthy test writes tens of each): exit
 * records without a guest report (past this: a "drop" record with the count),
 * kernel events (past this: "ktdrop"; QEMU as the VMM makes ~3000). The
 * records of a test are buffered
 * and written when it ends; the buffer holds them all, so a storming test
 * is not slowed down by the console while it is judged.
 */
#define VT_EXIT_RECORDS_MAX	2000
#define VT_KT_LINES_MAX		4000
#define VT_REC_BUFFER		(2 << 20)

/*
 * An exit storm: exits that tell user space nothing (no guest report, no
 * signal of the VMM's, no change of the level shown) at VT_STORM_RATE per
 * second or more, sustained over VT_STORM_MS. The VMM then ends the test.
 */
#define VT_STORM_RATE		200
#define VT_STORM_MS		1000

#endif
