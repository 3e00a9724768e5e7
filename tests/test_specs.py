"""Strict loading of guest specs, machine configs and revision profiles."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.core import repo
from harness.core.errors import InputError
from harness.inputs import guest_spec, machine, revision


def _spec_copy(tmp_path: Path, name: str = "oneshot_wfi") -> Path:
    shutil.copy(repo.GUEST_TESTS / f"{name}.c", tmp_path / f"{name}.c")
    dst = tmp_path / f"{name}.yaml"
    shutil.copy(repo.GUEST_TESTS / f"{name}.yaml", dst)
    return dst


def test_all_shipped_specs_load():
    tests = guest_spec.load_all()
    assert {"oneshot_wfi", "mmio_spin", "rearm_n"} <= set(tests)
    for t in tests.values():
        assert t.source.is_file()


def test_unknown_key_names_file_line_and_key(tmp_path):
    path = _spec_copy(tmp_path)
    path.write_text(path.read_text() + "timeout: 3\n")
    with pytest.raises(InputError) as e:
        guest_spec.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:") and "unknown key 'timeout'" in msg
    assert e.value.line == len(path.read_text().splitlines())


def test_malformed_yaml_names_the_line(tmp_path):
    path = _spec_copy(tmp_path)
    path.write_text("name: oneshot_wfi\nabis: [upstream\n")
    with pytest.raises(InputError, match="invalid YAML"):
        guest_spec.load(path)


def test_source_outside_the_spec_dir_is_refused(tmp_path):
    path = _spec_copy(tmp_path)
    path.write_text(path.read_text().replace("source: oneshot_wfi.c", "source: ../../etc/passwd"))
    with pytest.raises(InputError, match="lies outside"):
        guest_spec.load(path)


def test_unknown_property_is_refused(tmp_path):
    path = _spec_copy(tmp_path)
    path.write_text(path.read_text().replace("wake, once", "wake, twice"))
    with pytest.raises(InputError, match="unknown value 'twice'"):
        guest_spec.load(path)


def test_unknown_test_lists_the_valid_ones():
    with pytest.raises(InputError, match=r"valid: .*oneshot_wfi"):
        guest_spec.select(guest_spec.load_all(), ["nope"])


def test_unknown_revision_and_machine_list_valid_ones():
    with pytest.raises(InputError, match=r"valid: .*upstream"):
        revision.load("v99")
    with pytest.raises(InputError, match=r"valid: .*virt-gicv3"):
        machine.load("nosuch")


def test_machine_argv_renders_the_config():
    m = machine.load("virt-gicv3")
    trace = ("arm_gt_*", "gic_set_irq")
    argv = m.qemu_argv(
        Path("Image"), Path("initrd"), Path("/tmp/x/qmp.sock"), Path("t"), None, trace
    )
    assert argv[0] == "qemu-system-aarch64"
    assert argv[argv.index("-M") + 1] == "virt,virtualization=on,gic-version=3"
    assert argv[argv.index("-cpu") + 1] == "max,pauth-impdef=on"
    assert argv[argv.index("-append") + 1] == m.kernel_cmdline
    # the machine runs at once (no -S), its trace events on from the command line
    assert "-S" not in argv and "unix:/tmp/x/qmp.sock,server=on,wait=off" in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-trace"] == [
        "enable=arm_gt_*",
        "enable=gic_set_irq",
    ]
    assert argv[argv.index("-D") + 1] == "t"
    assert argv[argv.index("-nic") + 1] == "none"
    by_hand = m.qemu_argv(Path("Image"), Path("initrd"), None)
    assert "-qmp" not in by_hand and "-trace" not in by_hand and "-D" not in by_hand


def test_machine_bad_gic_version(tmp_path):
    src = (repo.QEMU_CONFIGS / "virt-gicv3.yaml").read_text()
    path = tmp_path / "bad.yaml"
    src = src.replace("name: virt-gicv3", "name: bad")
    path.write_text(src.replace("gic_version: 3", "gic_version: 4"))
    with pytest.raises(InputError, match="gic_version must be 2 or 3"):
        machine.load(str(path))


def test_upstream_profile():
    rev = revision.load("upstream")
    assert rev.patches == ()
    assert rev.abi.bits["vtimer"] == 0 and rev.abi.bits["ptimer"] == 1
    assert rev.coalesce and not rev.eintr_suffices


def _with_vmm(tmp_path: Path, vmm: str, name: str = "oneshot_wfi") -> Path:
    path = _spec_copy(tmp_path, name)
    path.write_text(path.read_text().replace("expect:\n", f"vmm:\n{vmm}expect:\n"))
    return path


def _vmm_error(path: Path) -> InputError:
    with pytest.raises(InputError) as e:
        guest_spec.load(path)
    return e.value


def test_vmm_options_load_and_default():
    specs = guest_spec.load_all()
    assert specs["oneshot_wfi"].vmm == guest_spec.VmmOptions()
    assert specs["oneshot_wfi"].vmm.manifest_args() == ""
    late = specs["late_inject"].vmm
    assert (late.inject, late.inject_delay_ms) == ("late", 40)
    assert specs["save_restore"].vmm.manifest_args() == "save_restore=1 downtime_ms=30"


def test_unknown_vmm_key_names_file_line_and_key(tmp_path):
    path = _with_vmm(tmp_path, "  inject_late: 40\n")
    err = _vmm_error(path)
    line = path.read_text().splitlines().index("  inject_late: 40") + 1
    assert str(err).startswith(f"{path}:{line}: unknown key 'inject_late'")
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("vmm", "key", "message"),
    [
        ("  inject: sometimes\n", "inject", "unknown value 'sometimes'"),
        ("  inject: late\n", "inject", "go together"),
        ("  inject_delay_ms: 40\n", "inject_delay_ms", "go together"),
        ("  inject: late\n  inject_delay_ms: 0\n", "inject_delay_ms", "must be in 1..60000"),
        ("  alarm_us: fast\n", "alarm_us", "must be int"),
        ("  alarm_us: 10\n", "alarm_us", "must be in 100..10000000"),
        ("  save_restore: 1\n", "save_restore", "must be bool"),
        ("  downtime_ms: 30\n", "downtime_ms", "needs 'save_restore: true'"),
    ],
)
def test_bad_vmm_values_are_refused_on_their_line(tmp_path, vmm, key, message):
    path = _with_vmm(tmp_path, vmm)
    err = _vmm_error(path)
    lines = path.read_text().splitlines()
    assert err.line == next(i for i, text in enumerate(lines, 1) if text.startswith(f"  {key}:"))
    assert message in err.message and f"'{key}'" in err.message


def test_vmm_must_be_a_mapping_and_vcpus_in_range(tmp_path):
    path = _spec_copy(tmp_path)
    path.write_text(path.read_text() + "vmm: [late]\n")
    assert "key 'vmm' must be a mapping" in str(_vmm_error(path))
    path = _spec_copy(tmp_path)
    path.write_text(path.read_text() + "vcpus: 5\n")
    assert "key 'vcpus' must be in 1..4" in str(_vmm_error(path))


def test_profile_with_an_unknown_key_names_file_line_and_key(tmp_path):
    rev = tmp_path / "badrev"
    shutil.copytree(repo.KERNEL_PATCHES / "v5", rev)
    prof = rev / "profile.yaml"
    text = prof.read_text().replace("revision: v5", "revision: badrev")
    prof.write_text(
        text.replace("  eintr_suffices: true", "  eintr_suffices: true\n  coalesc: false")
    )
    line = prof.read_text().splitlines().index("  coalesc: false") + 1
    with pytest.raises(InputError) as e:
        revision.load(str(rev))
    assert str(e.value) == (
        f"{prof}:{line}: unknown key 'coalesc' (allowed: coalesce, eintr_suffices)"
    )


def test_series_naming_a_missing_patch(tmp_path):
    rev = tmp_path / "norev"
    shutil.copytree(repo.KERNEL_PATCHES / "v5", rev)
    (rev / "profile.yaml").write_text(
        (rev / "profile.yaml").read_text().replace("revision: v5", "revision: norev")
    )
    (rev / "series").write_text("# ours\n0002-missing.patch\n")
    with pytest.raises(InputError, match=r"series:2: patch '0002-missing.patch' does not exist"):
        revision.load(str(rev))
