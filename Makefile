# vtimer-harness: the two commands users run are `make boot-test` and `make test`.
# Everything they need is installed by scripts/install-deps.sh (apt) and the venv (pip).

REV ?= upstream
MACHINE ?= virt-gicv3
POLICY ?= every-exit
VMM ?= ours
ARGS ?=
# a developer's kernel: TREE=~/linux (built out of tree), SERIES=an mbox or a patch dir
TREE ?=
SERIES ?=
PYTHON ?= python3
CROSS ?= aarch64-linux-gnu-

BUILD := build
VENV := .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(BUILD)/.deps-stamp
# what boot-test needs of them (a first run does not wait for the matrices' packages)
DEPS_BOOT_STAMP := $(BUILD)/.deps-boot-stamp

GUEST_SRCS := $(wildcard guest_tests/*.c)
GUEST_BINS := $(patsubst guest_tests/%.c,$(BUILD)/guests/%.bin,$(GUEST_SRCS))
RUNTIME_OBJS := $(BUILD)/guests/runtime/start.o $(BUILD)/guests/runtime/runtime.o
# guests whose VMM is QEMU (guest_tests/qemu/): their own runtime, ELF images
QEMU_GUEST_SRCS := $(filter-out guest_tests/qemu/qrt.c,$(wildcard guest_tests/qemu/*.c))
QEMU_GUEST_ELFS := $(patsubst guest_tests/qemu/%.c,$(BUILD)/qemu-guests/%.elf,$(QEMU_GUEST_SRCS))
QEMU_RT_OBJS := $(BUILD)/qemu-guests/rt/start.o $(BUILD)/qemu-guests/rt/qrt.o
QEMU_RT_HDRS := guest_tests/qemu/qrt.h guest_tests/runtime/guest.h guest_tests/runtime/vt_ports.h
.SECONDARY: $(QEMU_RT_OBJS)
VMM_SRCS := $(wildcard vmm/*.c)
PY_DIRS := $(wildcard harness tests bench)
PY_SRCS := $(shell find harness -name '*.py' 2>/dev/null)
BYTECODE_STAMP := $(BUILD)/.bytecode-stamp
VMM_HDRS := $(wildcard vmm/*.h) guest_tests/runtime/vt_ports.h

GUEST_CFLAGS := -O2 -Wall -Wextra -ffreestanding -fno-builtin -nostdlib -mgeneral-regs-only \
	-mstrict-align -fno-pic -fno-stack-protector -fno-asynchronous-unwind-tables \
	-Iguest_tests/runtime
VMM_CFLAGS := -O2 -Wall -Wextra -static -pthread -Iguest_tests/runtime

.PHONY: all deps venv artifacts artifacts-unlocked boot-test test lint format clean distclean
# keep the guests' objects and ELF files (intermediates) for debugging
.PRECIOUS: $(BUILD)/guests/%.elf $(BUILD)/guests/runtime/%.o $(BUILD)/qemu-guests/rt/%.o
all: artifacts

deps: $(DEPS_STAMP)
$(DEPS_STAMP): scripts/install-deps.sh
	@mkdir -p $(BUILD)
	sh scripts/install-deps.sh all
	@touch $@ $(DEPS_BOOT_STAMP)
$(DEPS_BOOT_STAMP): scripts/install-deps.sh
	@mkdir -p $(BUILD)
	sh scripts/install-deps.sh boot
	@touch $@

# the venv: the harness's own dependencies for boot-test, the dev extras (pytest,
# ruff, the schemas' libraries) for make test. Debian 12's pip (23.0) installs an
# editable pyproject package as it is: no pip upgrade to download first. compat: the
# repository goes on sys.path by a .pth line (setuptools' default is an import hook
# that every Python start imports, some 5 ms of each boot-test's start).
EDITABLE := --config-settings editable_mode=compat
venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml $(DEPS_BOOT_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e . $(EDITABLE)
	@touch $@
$(VENV)/.dev-stamp: $(VENV)/.stamp
	$(VENV)/bin/pip install -q -e '.[dev]' $(EDITABLE)
	@touch $@

# The harness's bytecode, compiled ahead: Python writes none itself under
# PYTHONDONTWRITEBYTECODE (CI images often set it), and every start of the harness
# then compiles it again (about 90 ms of a boot-test's 0.25 s before QEMU starts).
$(BYTECODE_STAMP): $(PY_SRCS)
	@mkdir -p $(BUILD)
	@if [ -x $(PY) ] && [ -d harness ]; then $(PY) -m compileall -q harness >/dev/null; fi
	@touch $@

# One build of the artifacts at a time per tree: boot-tests, matrix workers and
# users all make them, often at once. harness/build/artifacts.py takes the same lock
# (flock on $(ARTIFACTS_LOCK)) and makes artifacts-unlocked. The images are
# written to a temp file and renamed, so a run reading one reads it whole.
ARTIFACTS_LOCK := $(BUILD)/.artifacts.lock
ARTIFACTS_WAIT_S := 600
artifacts: $(BYTECODE_STAMP)
	@mkdir -p $(BUILD)
	@flock -E 75 -w $(ARTIFACTS_WAIT_S) $(ARTIFACTS_LOCK) $(MAKE) --no-print-directory artifacts-unlocked; \
	rc=$$?; [ $$rc -ne 75 ] || echo "make artifacts: $(ARTIFACTS_LOCK) still locked after $(ARTIFACTS_WAIT_S) s" >&2; \
	exit $$rc

artifacts-unlocked: $(BUILD)/vmm/vtvmm $(GUEST_BINS) $(QEMU_GUEST_ELFS)

$(BUILD)/vmm/vtvmm: $(VMM_SRCS) $(VMM_HDRS) $(DEPS_BOOT_STAMP)
	@mkdir -p $(dir $@)
	$(CROSS)gcc $(VMM_CFLAGS) -o $@.tmp $(VMM_SRCS)
	@mv -f $@.tmp $@

$(BUILD)/guests/runtime/%.o: guest_tests/runtime/%.S guest_tests/runtime/vt_ports.h guest_tests/runtime/vectors.h $(DEPS_BOOT_STAMP)
	@mkdir -p $(dir $@)
	$(CROSS)gcc $(GUEST_CFLAGS) -c -o $@ $<

$(BUILD)/guests/runtime/%.o: guest_tests/runtime/%.c guest_tests/runtime/guest.h guest_tests/runtime/vt_ports.h $(DEPS_BOOT_STAMP)
	@mkdir -p $(dir $@)
	$(CROSS)gcc $(GUEST_CFLAGS) -c -o $@ $<

$(BUILD)/guests/%.elf: guest_tests/%.c $(RUNTIME_OBJS) guest_tests/runtime/guest.lds guest_tests/runtime/guest.h
	$(CROSS)gcc $(GUEST_CFLAGS) -T guest_tests/runtime/guest.lds -Wl,--build-id=none -Wl,--no-warn-rwx-segments -o $@ $(RUNTIME_OBJS) $<

$(BUILD)/guests/%.bin: $(BUILD)/guests/%.elf
	$(CROSS)objcopy -O binary $< $@.tmp
	@mv -f $@.tmp $@

$(BUILD)/qemu-guests/rt/%.o: guest_tests/qemu/%.S guest_tests/runtime/vectors.h $(DEPS_BOOT_STAMP)
	@mkdir -p $(dir $@)
	$(CROSS)gcc $(GUEST_CFLAGS) -c -o $@ $<

$(BUILD)/qemu-guests/rt/%.o: guest_tests/qemu/%.c $(QEMU_RT_HDRS) $(DEPS_BOOT_STAMP)
	@mkdir -p $(dir $@)
	$(CROSS)gcc $(GUEST_CFLAGS) -c -o $@ $<

$(BUILD)/qemu-guests/%.elf: guest_tests/qemu/%.c $(QEMU_RT_OBJS) guest_tests/qemu/guest.lds $(QEMU_RT_HDRS)
	$(CROSS)gcc $(GUEST_CFLAGS) -Iguest_tests/qemu -static -no-pie -Wl,-z,max-page-size=4096 -T guest_tests/qemu/guest.lds -Wl,--build-id=none -Wl,--no-warn-rwx-segments -o $@.tmp $(QEMU_RT_OBJS) $<
	@mv -f $@.tmp $@

boot-test: venv $(BYTECODE_STAMP) artifacts
	$(PY) -m harness boot-test --rev $(REV) --machine $(MACHINE) --policy $(POLICY) --vmm $(VMM) \
		$(if $(TREE),--tree $(TREE)) $(if $(SERIES),--series $(SERIES)) $(ARGS)

test: $(DEPS_STAMP) $(VENV)/.dev-stamp $(BYTECODE_STAMP) artifacts
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)
	$(VENV)/bin/pytest -q $(ARGS)

lint: $(VENV)/.dev-stamp
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)

format: $(VENV)/.dev-stamp
	$(VENV)/bin/ruff format $(PY_DIRS)

clean:
	rm -rf $(BUILD)/guests $(BUILD)/qemu-guests $(BUILD)/vmm

distclean:
	rm -rf $(BUILD) $(VENV)
