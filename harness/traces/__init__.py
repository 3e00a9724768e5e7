"""The three layers read, one pass each: the VMM's records (layer 2), the L1 kernel's
tracepoints (layer 1, kernel_trace), QEMU's arm_gt_* events (layer 0, qemu_trace);
a test's trace and the correlations between the layers.
"""
