#!/bin/sh
# Install the host packages vtimer-harness needs (Debian 12, run as root).
#   install-deps.sh boot   what `make boot-test` needs: QEMU, the cross compiler,
#                          linux-source-6.1 and the kernel's build tools
#   install-deps.sh [all]  everything `make test` and the matrices need besides
# Idempotent: does nothing when every package is already installed (and, for
# all, dpkg already knows the arm64 architecture).
# linux-source-6.12: the second kernel source of the matrix (matrix/*.yaml).
# lava-dispatcher: LAVA's own dispatcher (lava-run, Debian 2023.01), which runs an
# exported LAVA job here as a lab's worker would (harness/lab/lava/lavarun.py);
# ipxe-qemu: the NIC ROM LAVA's qemu device type needs (its -net nic).
# chromium: the report's check in a real browser (tests/test_report_browser.py).
# arm64 (foreign architecture, lists only): prebuilt Debian kernels are
# fetched with apt-get download NAME:arm64 (harness/build/debkernel.py); no arm64
# package is ever installed into the host.
set -eu
BOOT_PKGS="python3 python3-venv python3-pip patch qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
linux-source-6.1 flex bison bc libssl-dev libelf-dev cpio ccache make xz-utils gzip"
MORE_PKGS="linux-source-6.12 chromium ipxe-qemu lava-dispatcher"
case "${1:-all}" in
boot) PKGS=$BOOT_PKGS; want_arm64="" ;;
all) PKGS="$BOOT_PKGS $MORE_PKGS"; want_arm64=yes ;;
*) echo "install-deps: unknown set '$1' (boot or all)" >&2; exit 2 ;;
esac
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
arm64=yes
[ -z "$want_arm64" ] || dpkg --print-foreign-architectures | grep -qx arm64 || arm64=""
[ -z "$missing" ] && [ -n "$arm64" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing${arm64:- (and dpkg's arm64 architecture)} (run as root, or install them)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ -z "$arm64" ]; then
	echo "install-deps: dpkg --add-architecture arm64"
	dpkg --add-architecture arm64
fi
apt-get update -qq
if [ -n "$missing" ]; then
	echo "install-deps: installing$missing"
	apt-get install -y -qq --no-install-recommends $missing
fi
