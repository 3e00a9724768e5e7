"""One nested QEMU boot of a suite: the QEMU process and its QMP (qemu_runner),
the suite's boot with its deadline and classified end (suite), injected faults.
"""
