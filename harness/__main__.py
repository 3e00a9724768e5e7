import os
import sys

if sys.argv[1:2] == ["boot-test"]:  # its subprocesses run while the rest imports
    from harness.runs import prefetch

    prefetch.boot_test()

from harness.cli import main

code = main() or 0
# Everything is written and closed: skip the interpreter's teardown, which frees
# every object one by one (some 40 ms after a boot-test, more after a matrix).
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
