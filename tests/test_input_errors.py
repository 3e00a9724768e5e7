"""Bad input files: each gives one InputError line naming the file (and the line), never a
traceback. The YAML layer (harness/core/yamlfile.py) first, then each kind of file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core import repo, yamlfile
from harness.core.errors import InputError
from harness.inputs import guest_spec, machine, qemu_tests, revision
from harness.runs.matrix import spec as matrix_spec


def load_error(path: Path, text: str | bytes) -> InputError:
    """The InputError loading text (written to path) gives; checks it is one line."""
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    with pytest.raises(InputError) as e:
        yamlfile.load(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}")
    return e.value


def _line_of(path: Path, start: str) -> int:
    """The first line of path that starts with start (as bytes: path may not be UTF-8)."""
    lines = path.read_bytes().splitlines()
    return next(n for n, t in enumerate(lines, 1) if t.startswith(start.encode()))


def set_key(text: str, key: str, value: str) -> str:
    """text with the top-level key's entry (its line and the indented lines under it)
    replaced by 'key: value'."""
    out: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith(f"{key}:"):
            out.append(f"{key}: {value}")
            rest = list(lines)
            while rest and rest[0].startswith((" ", "#")):
                rest.pop(0)
            out += rest
            break
        out.append(line)
    else:
        raise AssertionError(f"no key {key}")
    return "\n".join(out) + "\n"


# -- the YAML layer ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        # 1. not UTF-8: the line of the first bad byte
        (b"name: x\ndescription: caf\xe9\n", 2, "not UTF-8 text (byte 0xe9"),
        ("a: 1\n".encode("utf-16"), 1, "not UTF-8 text (byte 0xff"),
        # 2. control characters (PyYAML's reader error)
        (b"name: x\n\ndescription: a\x01b\n", 3, "unprintable character U+0001"),
        (b"a: \x00\n", 1, "unprintable character U+0000"),
        # 3. unhashable keys
        ("a: 1\n? [a, b]\n: 1\n", 2, "a key must be a plain value, not a list"),
        ("{[1]: 2}\n", 1, "a key must be a plain value, not a list"),
        ("x:\n  {a: 1}: 2\n", 2, "a key must be a plain value, not a mapping"),
        # 4. scanner, parser and constructor errors
        ("a: 'x\n", 2, "invalid YAML: found unexpected end of stream"),
        ("a: [1\n", 2, "invalid YAML: expected ',' or ']'"),
        ("a:\n\tb: 1\n", 2, "invalid YAML: found character '\\t'"),
        ("a: *nowhere\n", 1, "invalid YAML: found undefined alias 'nowhere'"),
        ("a: 1\n---\nb: 2\n", 2, "invalid YAML: but found another document"),
        ("a: 1\na: 2\n", 2, "duplicate key 'a'"),
        ("a: &x {b: 1}\nc:\n  <<: *x\n", 3, "merge keys ('<<') are not supported"),
        # tags: !!int x is a ValueError inside PyYAML, !!python/... is not safe
        ("a: 1\nb: !!int x\n", 2, "YAML tags ('!!int') are not allowed"),
        ("a: !!python/object:os.system x\n", 1, "YAML tags ('!!python/object:os.system')"),
        ("a: !!set {x}\n", 1, "YAML tags ('!!set') are not allowed"),
        # numbers the resolver takes for one but int() does not, out of range, not finite
        ("a: 0b_\n", 1, "'0b_' is not a valid number"),
        ("a:\n  b: 100000000000000000000\n", 2, "integer 100000000000000000000 is out of range"),
        ("a: -.inf\n", 1, "number -.inf is not finite"),
    ],
)
def test_yaml_errors_are_one_line_with_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.yaml"
    err = load_error(path, text)
    assert err.line == line, str(err)
    assert str(err).startswith(f"{path}:{line}: {message}"), str(err)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- a\n- b\n", "top level must be a mapping, not a list"),
        ("just words\n", "top level must be a mapping, not a string"),
        ("42\n", "top level must be a mapping, not a number"),
        ("a: " + "[" * 1000 + "]" * 1000 + "\n", "nested too deeply"),
    ],
)
def test_a_file_that_is_no_mapping_is_one_line(tmp_path, text, message):
    assert message in str(load_error(tmp_path / "bad.yaml", text))


def test_a_directory_or_missing_file_cannot_be_read(tmp_path):
    with pytest.raises(InputError, match=r"nope.yaml: cannot read: No such file"):
        yamlfile.load(tmp_path / "nope.yaml")
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(InputError, match=r"dir.yaml: cannot read: Is a directory"):
        yamlfile.load(tmp_path / "dir.yaml")


def test_dates_and_equals_signs_are_plain_strings(tmp_path):
    """YAML 1.1 reads 2020-13-45 as a date (a ValueError in PyYAML) and '=' as a value key."""
    path = tmp_path / "ok.yaml"
    path.write_text("a: 2020-13-45\nb: 2020-01-01\nc: =\n")
    assert yamlfile.load(path) == {"a": "2020-13-45", "b": "2020-01-01", "c": "="}


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert yamlfile.load(path) == {"a": 1}


def test_a_value_with_line_breaks_stays_on_one_line(tmp_path):
    """InputError escapes line breaks and control characters of the values it quotes."""
    path = tmp_path / "x.yaml"
    path.write_text('a: "one\\ntwo\\x01"\n')
    data = yamlfile.load(path)
    with pytest.raises(InputError) as e:
        yamlfile.expect_choice(path, data, "a", ("b",))
    assert str(e.value) == f"{path}:1: key 'a': unknown value 'one\\ntwo\\x01' (allowed: b)"


# -- machine files (qemu_configs/<name>.yaml) ------------------------------------------


def _machine(tmp_path: Path, name: str, old: str = "", new: str = "") -> Path:
    """A copy of virt-gicv3.yaml as tmp_path/<name>.yaml (its name fixed), old -> new."""
    text = (repo.QEMU_CONFIGS / "virt-gicv3.yaml").read_text()
    text = text.replace("name: virt-gicv3", f"name: {name}")
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new))
    return path


def _machine_error(path: Path) -> str:
    with pytest.raises(InputError) as e:
        machine.load(str(path))
    text = str(e.value)
    assert "\n" not in text
    return text


def test_a_machine_copy_with_its_own_name_loads(tmp_path):
    m = machine.load(str(_machine(tmp_path, "mine")))
    assert m.name == "mine" and [f.name for f in m.kernel_fragments] == [
        "kvm-minimal.config",
        "trace.config",
        "records.config",
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("other", "name 'other' must match the file name 'mine'"),
        ("a/mine", "name 'a/mine' must not hold a '/'"),
        ("[mine]", "key 'name' must be str, not ['mine']"),
    ],
)
def test_a_machine_whose_name_is_not_its_file_name(tmp_path, name, message):
    path = _machine(tmp_path, "mine", "name: mine", f"name: {name}")
    assert _machine_error(path) == f"{path}:{_line_of(path, 'name:')}: {message}"


@pytest.mark.parametrize(
    ("fragments", "message"),
    [
        (
            "[../../../../../../etc/passwd]",
            "kernel fragment '../../../../../../etc/passwd' lies outside",
        ),
        ("[/etc/passwd]", "kernel fragment '/etc/passwd' lies outside"),
        ("[kvm-minimal.config, nosuch.config]", "kernel fragment 'nosuch.config' not found"),
        ("[kvm-minimal.config, 5]", "kernel_fragments: 5 is not a fragment's file name"),
        ("[null]", "kernel_fragments: None is not a fragment's file name"),
        ("kvm-minimal.config", "key 'kernel_fragments' must be list"),
    ],
)
def test_kernel_fragments_outside_or_missing(tmp_path, fragments, message):
    path = _machine(
        tmp_path,
        "mine",
        "kernel_fragments: [kvm-minimal.config, trace.config, records.config]",
        f"kernel_fragments: {fragments}",
    )
    assert _machine_error(path).startswith(
        f"{path}:{_line_of(path, 'kernel_fragments:')}: {message}"
    )


def test_a_fragment_beside_a_users_machine_file_is_found_first(tmp_path):
    (tmp_path / "trace.config").write_text("CONFIG_FTRACE=y\n")
    m = machine.load(str(_machine(tmp_path, "mine")))
    assert m.kernel_fragments[1] == tmp_path / "trace.config"


def test_a_shipped_machine_cannot_reach_outside_the_repository(tmp_path):
    """The two places a fragment is looked up in are the machine file's directory and
    qemu_configs/fragments/: for a shipped machine both lie in the repository."""
    assert all(
        repo.inside(repo.ROOT, f)
        for name in machine.available()
        for f in machine.load(name).kernel_fragments
    )


@pytest.mark.parametrize(("key", "value"), [("smp", "1"), ("memory_mb", "512")])
def test_machine_counts_must_be_positive(tmp_path, key, value):
    path = _machine(tmp_path, "mine", f"{key}: {value}\n", f"{key}: 0\n")
    assert _machine_error(path) == f"{path}:{_line_of(path, key)}: key '{key}' must be at least 1"


# -- guest specs (guest_tests/<name>.yaml, guest_tests/qemu/<name>.yaml) ----------------


def _spec(tmp_path: Path, old: str = "", new: str = "", name: str = "oneshot_wfi") -> Path:
    shutil.copy(repo.GUEST_TESTS / f"{name}.c", tmp_path / f"{name}.c")
    text = (repo.GUEST_TESTS / f"{name}.yaml").read_text()
    assert old in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(old, new))
    return path


def _spec_error(path: Path, load=guest_spec.load) -> str:
    with pytest.raises(InputError) as e:
        load(path)
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("sub/oneshot_wfi.c", "lies in a subdirectory: the Makefile builds only the .c files in"),
        ("../oneshot_wfi.c", "lies outside"),
        ("oneshot_wfi.h", "must be a .c file in"),
        ("nosuch.c", "does not exist"),
    ],
)
def test_a_spec_source_must_be_a_c_file_beside_the_spec(tmp_path, source, message):
    (tmp_path / "sub").mkdir()
    shutil.copy(repo.GUEST_TESTS / "oneshot_wfi.c", tmp_path / "sub" / "oneshot_wfi.c")
    shutil.copy(repo.GUEST_TESTS / "oneshot_wfi.c", tmp_path / "oneshot_wfi.h")
    path = _spec(tmp_path, "source: oneshot_wfi.c", f"source: {source}")
    line = _line_of(path, "source:")
    assert _spec_error(path).startswith(f"{path}:{line}: source '{source}' {message}")


def test_a_qemu_spec_source_must_be_a_c_file_beside_it_too(tmp_path):
    text = (repo.GUEST_TESTS / "qemu" / "vtimer_gic.yaml").read_text()
    path = tmp_path / "vtimer_gic.yaml"
    path.write_text(text.replace("source: vtimer_gic.c", "source: sub/vtimer_gic.c"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "vtimer_gic.c").write_text("int x;\n")
    text = _spec_error(path, lambda p: qemu_tests.load(p, guest_spec.load_all()))
    assert text.startswith(f"{path}:{_line_of(path, 'source:')}: source 'sub/vtimer_gic.c' lies in")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("description", "[a, b]", "key 'description' must be str, not ['a', 'b']"),
        ("properties", "{a: 1}", "key 'properties' must be list"),
        ("properties", "[[visible]]", "key 'properties': unknown value '['visible']'"),
        ("expect", "null", "key 'expect' must be a mapping"),
        ("expect", "{edges: [vtimer]}", "key 'edges' must be a mapping"),
        ("name", "~", "key 'name' must be str, not None"),
        ("source", "{a: b}", "key 'source' must be str"),
    ],
)
def test_spec_values_of_the_wrong_type(tmp_path, key, value, message):
    path = _spec(tmp_path)
    path.write_text(set_key(path.read_text(), key, value))
    text = _spec_error(path)
    assert text.startswith(f"{path}:{_line_of(path, key)}: {message}"), text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("peers", "[[rearm_n]]", "key 'peers': unknown value '['rearm_n']'"),
        ("memory_mb", "0", "key 'memory_mb' must be at least 16"),
        ("timeout_s", "-1", "key 'timeout_s' must be at least 1"),
        ("description", "5", "key 'description' must be str, not 5"),
        ("abis", "upstream", "key 'abis' must be list"),
    ],
)
def test_qemu_spec_values(tmp_path, key, value, message):
    shutil.copy(repo.GUEST_TESTS / "qemu" / "vtimer_gic.c", tmp_path / "vtimer_gic.c")
    path = tmp_path / "vtimer_gic.yaml"
    path.write_text(set_key((repo.GUEST_TESTS / "qemu" / path.name).read_text(), key, value))
    text = _spec_error(path, lambda p: qemu_tests.load(p, guest_spec.load_all()))
    assert text.startswith(f"{path}:{_line_of(path, key)}: {message}"), text


def test_load_all_with_a_non_utf8_spec_names_it(tmp_path):
    for p in repo.GUEST_TESTS.glob("*"):
        if p.is_file():
            shutil.copy(p, tmp_path / p.name)
    bad = tmp_path / "rearm_n.yaml"
    bad.write_bytes(bad.read_bytes().replace(b"description:", b"description: \xff", 1))
    with pytest.raises(InputError) as e:
        guest_spec.load_all(tmp_path)
    assert str(e.value) == (
        f"{bad}:{_line_of(bad, 'description')}: not UTF-8 text (byte 0xff is not valid UTF-8)"
    )


def test_harness_list_with_a_non_utf8_spec_is_one_line_exit_2(tmp_path):
    """`python -m harness list` in a copy of the tree whose guest_tests/ holds a spec in
    Latin-1: exit status 2 and one line 'error: <file>:<line>: ...', no traceback."""
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__")
    for d in ("harness", "guest_tests", "qemu_configs", "kernel_patches", "vmm"):
        shutil.copytree(repo.ROOT / d, tree / d, ignore=ignore)
    spec = tree / "guest_tests" / "rearm_n.yaml"
    spec.write_bytes(spec.read_bytes().replace(b"description:", b"description: caf\xe9", 1))
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-m", "harness", "list"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    line = _line_of(spec, "description")
    assert out.stderr == (f"error: {spec}:{line}: not UTF-8 text (byte 0xe9 is not valid UTF-8)\n")


# -- profiles (kernel_patches/<rev>/profile.yaml) ------------------------------------


def _revision(tmp_path: Path, rev: str = "v5") -> Path:
    """A copy of kernel_patches/<rev>/ as tmp_path/<rev>; its profile's path."""
    shutil.copytree(repo.KERNEL_PATCHES / rev, tmp_path / rev)
    return tmp_path / rev / "profile.yaml"


def _revision_error(prof: Path) -> str:
    with pytest.raises(InputError) as e:
        revision.load(str(prof.parent))
    text = str(e.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "the file is empty"),
        ("- revision: v5\n", None, "top level must be a mapping, not a list"),
        ("v5\n", None, "top level must be a mapping, not a string"),
        (b"revision: v5\ntitle: \xe9\n", 2, "not UTF-8 text"),
    ],
)
def test_a_profile_that_is_no_mapping(tmp_path, text, line, message):
    prof = _revision(tmp_path)
    prof.write_bytes(text.encode() if isinstance(text, str) else text)
    err = _revision_error(prof)
    assert err.startswith(f"{prof}:{line}: " if line else f"{prof}: ") and message in err, err


def set_line(text: str, start: str, value: str) -> str:
    """text with the first line that starts with start replaced by start + value."""
    lines = text.splitlines()
    n = next(i for i, t in enumerate(lines) if t.startswith(start))
    lines[n] = start + value
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("start", "value", "message"),
    [
        ("revision:", "[v5]", "key 'revision' must be str"),
        ("model:", "null", "key 'model' must be str, not None"),
        ("title:", "{a: 1}", "key 'title' must be str"),
        ("abi:", "[v5]", "key 'abi' must be a mapping"),
        ("  level_field:", "5", "key 'level_field' must be str, not 5"),
        ("  history_field:", "[a]", "key 'history_field' must be str"),
        ("  exit_reason_value:", "x", "key 'exit_reason_value' must be int"),
        ("  bits:", "{vtimer: true}", "abi.bits must map timer names to bit numbers"),
        ("  bits:", "{vtimer: 64}", "bit numbers (0..63)"),
        ("  bits:", "{1: 0}", "abi.bits must map timer names"),
        ("  bits:", "[vtimer]", "abi.bits must map timer names"),
        ("semantics:", "null", "key 'semantics' must be a mapping"),
        ("  coalesce:", "1", "key 'coalesce' must be bool"),
        ("rules:", "{a: 1}", "key 'rules' must be list"),
        ("rules:", "[just a string]", "each rule must be a mapping, not 'just a string'"),
        ("  - rule:", "[a]", "key 'rule' must be str"),
    ],
)
def test_profile_values_of_the_wrong_type(tmp_path, start, value, message):
    prof = _revision(tmp_path)
    text = prof.read_text()
    if start.startswith(" "):
        text = set_line(text, start, f" {value}")
    else:
        text = set_key(text, start.rstrip(":"), value)
    prof.write_text(text)
    err = _revision_error(prof)
    assert err.startswith(f"{prof}:{_line_of(prof, start)}: ") and message in err, err


def test_a_series_file_that_is_not_utf8(tmp_path):
    prof = _revision(tmp_path)
    (prof.parent / "series").write_bytes(b"# \xff\n")
    assert _revision_error(prof) == (
        f"{prof.parent / 'series'}:1: not UTF-8 text (byte 0xff is not valid UTF-8)"
    )


@pytest.mark.parametrize(
    ("value", "line_of", "message"),
    [
        ("[series]", "series:", "key 'series' must map kernel sources (linux-source-6.1, "),
        ("{}", "series:", "key 'series' must map kernel sources"),
        ("null", "series:", "key 'series' must map kernel sources"),
        ("{linux-source-5.10: series}", "series:", "series: unknown kernel source 'linux-source-5"),
        ("{7: series}", "series:", "series: unknown kernel source 7 (valid: linux-source-6.1, "),
        ("{linux-source-6.12: [series]}", "series:", "linux-source-6.12 must name a series file"),
        ("{linux-source-6.12: ../v4/series}", "series:", "(a plain file name) or be null, not '.."),
        ("{linux-source-6.12: series-9}", "series:", "linux-source-6.12's series file 'series-9'"),
        ("{linux-source-6.1: null}", "series:", "linux-source-6.1 is the default source and needs"),
    ],
)
def test_a_bad_series_map(tmp_path, value, line_of, message):
    prof = _revision(tmp_path)
    prof.write_text(set_key(prof.read_text(), "series", value))
    err = _revision_error(prof)
    assert err.startswith(f"{prof}:{_line_of(prof, line_of)}: ") and message in err, err


def test_a_bad_entry_names_its_own_line(tmp_path):
    prof = _revision(tmp_path)
    text = prof.read_text().replace("  linux-source-6.12: series-6.12", "  linux-source-6.13: x")
    prof.write_text(text)
    err = _revision_error(prof)
    assert err.startswith(f"{prof}:{_line_of(prof, '  linux-source-6.13:')}: "), err


def test_a_series_map_naming_a_bad_series_file(tmp_path):
    prof = _revision(tmp_path)
    (prof.parent / "series-6.12").write_text("no-such.patch\n")
    assert _revision_error(prof) == (
        f"{prof.parent / 'series-6.12'}:1: patch 'no-such.patch' does not exist"
    )


def test_a_source_without_a_series_is_one_line_when_built(tmp_path):
    prof = _revision(tmp_path)
    prof.write_text(set_key(prof.read_text(), "series", "{linux-source-6.12: null}"))
    rev = revision.load(str(prof.parent))
    assert rev.series_file("linux-source-6.12") is None and rev.series_file("x") == "series"
    with pytest.raises(InputError) as e:
        rev.for_source("linux-source-6.12")
    assert str(e.value) == f"{prof}: revision 'v5' has no series for linux-source-6.12"
    assert rev.for_source("linux-source-6.1").patches == rev.patches


# -- matrix files (matrix/*.yaml) ----------------------------------------------------


def _matrix_error(tmp_path: Path, text: str | bytes) -> tuple[Path, str]:
    path = tmp_path / "m.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(InputError) as e:
        matrix_spec.load(path)
    assert "\n" not in str(e.value)
    return path, str(e.value)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "the file is empty"),
        ("- {revision: v4}\n", None, "top level must be a mapping, not a list"),
        ("nightly\n", None, "top level must be a mapping, not a string"),
        (b"name: t\ncells: [{revision: v\xe94}]\n", 2, "not UTF-8 text"),
        ("name: [t]\ncells: [{revision: v4}]\n", 1, "key 'name' must be str"),
        ("name: null\ncells: [{revision: v4}]\n", 1, "key 'name' must be str, not None"),
        ("name: ../t\ncells: [{revision: v4}]\n", 1, "key 'name': '../t' holds '/'"),
        ("name: t\ndescription: 5\ncells: [{revision: v4}]\n", 2, "key 'description' must"),
        ("name: t\ndefaults: [a]\ncells: [{revision: v4}]\n", 2, "'defaults' must be a mapping"),
        ("name: t\ndefaults: {machine: null}\ncells: [{revision: v4}]\n", 2, "must be str"),
        ("name: t\ndefaults: {tests: oneshot_wfi}\ncells: [{revision: v4}]\n", 2, "list of"),
        ("name: t\ncells: {revision: v4}\n", 2, "key 'cells' must be a non-empty list"),
        ("name: t\ncells: null\n", 2, "key 'cells' must be a non-empty list"),
        ("name: t\ncells:\n  - v4\n", 2, "each cell must be a mapping"),
        ("name: t\ncells:\n  - {revision: null}\n", 3, "must be a name or a non-empty list"),
        ("name: t\ncells:\n  - {revision: [[v4]]}\n", 3, "must be a name or a non-empty list"),
        ("name: t\ncells:\n  - {revision: {v4: 1}}\n", 3, "must be a name or a non-empty list"),
        ("name: t\ncells:\n  - {revision: v4, tests: 5}\n", 3, "must be a list of test names"),
        ("name: t\ncells:\n  - {revision: v4, expect: [pass]}\n", 3, "unknown value '['pass']'"),
        ("name: t\ncells:\n  - {revision: v4, expect: fail, expect_reason: 5}\n", 3, "str"),
        ("name: t\ncells:\n  - {revision: v4, name: 5}\n", 3, "key 'name' must be str, not 5"),
        ("name: t\ncells:\n  - {revision: v4, name: a/b}\n", 3, "key 'name': 'a/b' holds '/'"),
        ("name: t\ncells:\n  - {revision: v4, name: ..}\n", 3, "'..' is not a plain name"),
        ("name: t\ncells:\n  - {revision: v4, name: 'a#1'}\n", 3, "'a#1' holds '#'"),
    ],
)
def test_matrix_bad_values_are_one_line(tmp_path, text, line, message):
    path, err = _matrix_error(tmp_path, text)
    where = f"{path}:{line}: " if line else f"{path}: "
    assert err.startswith(where) and message in err, err


def test_a_matrix_machine_file_with_a_wrong_name_is_named(tmp_path):
    _machine(tmp_path, "mine", "name: mine", "name: other")
    path, err = _matrix_error(tmp_path, "name: t\ncells:\n  - {revision: v4, machine: mine.yaml}\n")
    assert err.startswith(f"{path}:3: key 'machine': machine '") and "must match" in err


def test_a_source_that_is_a_symlink_loop_or_holds_a_nul_is_refused(tmp_path):
    (tmp_path / "loop.c").symlink_to("loop2.c")
    (tmp_path / "loop2.c").symlink_to("loop.c")
    for source in ("loop.c", '"a\\0b.c"'):
        path = _spec(tmp_path, "source: oneshot_wfi.c", f"source: {source}")
        assert "lies outside" in _spec_error(path)


@pytest.mark.parametrize("command", [["boot-test"], ["matrix", "matrix/smoke.yaml"]])
def test_a_results_base_that_is_a_file_is_one_line_exit_2(tmp_path, command):
    """--results naming a file (or a path under one): one line, exit 2, nothing run."""
    taken = tmp_path / "taken"
    taken.write_text("not a directory\n")
    for base, why in ((taken, "File exists"), (taken / "sub", "Not a directory")):
        out = subprocess.run(
            [sys.executable, "-m", "harness", *command, "--results", str(base)],
            cwd=repo.ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr == f"error: {base}: cannot keep results here: {why}\n"
    assert taken.read_text() == "not a directory\n"
