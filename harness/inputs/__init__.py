"""What a run is asked to do: revisions (kernel_patches/), machines (qemu_configs/),
guest tests (guest_tests/), the VMM's limits, run options. Read and checked, nothing built.
"""
