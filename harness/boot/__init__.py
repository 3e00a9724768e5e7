"""One nested QEMU boot of a suite: QemuRun (qemu_runner) on the QEMU process
(qemu_process), its QMP (qmp) and its console (console);
the suite's boot with its deadline and classified end (suite), injected faults.
"""
