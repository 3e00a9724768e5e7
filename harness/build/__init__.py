"""What a boot needs, built or fetched and cached: the kernel (Debian source + a
revision's series, minimal config, ccache), Debian's prebuilt kernels, the suite's
initramfs, the VMM and guests (artifacts), the L1 rootfs for QEMU-as-VMM.
"""
