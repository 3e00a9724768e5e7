#!/bin/sh
# Install the host packages vtimer-harness needs (Debian 12, run as root).
# Idempotent: does nothing when every package is already installed.
set -eu
PKGS="python3 python3-venv python3-pip patch qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
linux-source-6.1 flex bison bc libssl-dev libelf-dev cpio ccache make xz-utils gzip
chromium"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root, or install them)" >&2
	exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
