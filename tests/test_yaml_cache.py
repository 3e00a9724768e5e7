"""The YAML parse cache (harness/core/yamlfile.py): a file of the repository parsed
once is loaded from build/yaml-cache/ while its bytes stay the same, with the same
lines; a changed file is parsed again; a bad file is never kept; an unwritable cache
is ignored; a file outside the repository is not kept."""

from __future__ import annotations

import hashlib
import marshal

import pytest

from harness.core import yamlfile
from harness.core.errors import InputError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(yamlfile, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(yamlfile, "CACHED_UNDER", tmp_path)  # tmp_path as the repository
    return tmp_path / "cache"


def _parsed(monkeypatch) -> list[str]:
    """The files PyYAML parses from now on (the cache's misses)."""
    from harness.core import yaml_loaders

    seen: list[str] = []
    real = yaml_loaders.parse
    monkeypatch.setattr(yaml_loaders, "parse", lambda p, t: seen.append(p.name) or real(p, t))
    return seen


def test_a_file_parsed_once_comes_from_the_cache_with_its_lines(tmp_path, cache, monkeypatch):
    f = tmp_path / "a.yaml"
    f.write_text("name: a\nlist:\n  - {x: 1}\n  - two\nn: 3\n")
    first = yamlfile.load(f)
    parsed = _parsed(monkeypatch)
    again = yamlfile.load(f)
    assert parsed == [] and len(list(cache.iterdir())) == 1
    assert again == first == {"name": "a", "list": [{"x": 1}, "two"], "n": 3}
    assert isinstance(again, yamlfile.LineDict) and isinstance(again["list"][0], yamlfile.LineDict)
    assert again.lines == first.lines == {"name": 1, "list": 2, "n": 5}
    assert again["list"][0].line == 3 and again["list"][0].lines == {"x": 3}


def test_a_changed_file_is_parsed_again(tmp_path, cache, monkeypatch):
    f = tmp_path / "a.yaml"
    f.write_text("name: a\n")
    yamlfile.load(f)
    parsed = _parsed(monkeypatch)
    f.write_text("name: b\n")
    assert yamlfile.load(f) == {"name": "b"} and parsed == ["a.yaml"]


def test_a_bad_file_is_said_each_time_and_never_kept(tmp_path, cache):
    f = tmp_path / "bad.yaml"
    f.write_text("name: a\nname: b\n")
    for _ in range(2):
        with pytest.raises(InputError, match="duplicate key 'name'") as e:
            yamlfile.load(f)
        assert e.value.line == 2
    assert not cache.exists() or not list(cache.iterdir())


def test_a_file_outside_the_repository_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(yamlfile, "CACHE_DIR", tmp_path / "cache")
    f = tmp_path / "a.yaml"  # not under the repository
    f.write_text("name: a\n")
    parsed = _parsed(monkeypatch)
    assert yamlfile.load(f) == {"name": "a"} == yamlfile.load(f)
    assert parsed == ["a.yaml", "a.yaml"] and not (tmp_path / "cache").exists()


def test_an_unwritable_cache_only_costs_a_parse(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")  # the cache's directory cannot be made under a file
    monkeypatch.setattr(yamlfile, "CACHE_DIR", blocked / "cache")
    monkeypatch.setattr(yamlfile, "CACHED_UNDER", tmp_path)
    f = tmp_path / "a.yaml"
    f.write_text("name: a\n")
    assert yamlfile.load(f) == {"name": "a"} == yamlfile.load(f)


def test_a_damaged_cache_file_is_parsed_again(tmp_path, cache):
    f = tmp_path / "a.yaml"
    f.write_text("name: a\n")
    yamlfile.load(f)
    (kept,) = cache.iterdir()
    for junk in (b"", b"\x00garbage", marshal.dumps((yamlfile.CACHE_FORMAT, b"x", (1, 2))),
                 marshal.dumps((yamlfile.CACHE_FORMAT, _digest(f), ([], {}, 1)))):  # fmt: skip
        kept.write_bytes(junk)
        assert yamlfile.load(f) == {"name": "a"}


def _digest(f) -> bytes:
    return hashlib.blake2b(f.read_bytes(), digest_size=16).digest()
