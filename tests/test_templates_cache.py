"""The node's template cache and the write-path helpers of ``nodes.templates``, pure, with known answers."""

from __future__ import annotations

import pytest

from idresolve.core.codes import ResponseCode, http_status
from idresolve.core.errors import InvalidValue
from idresolve.core.templates import TemplateRef, parse_definition, version_value
from idresolve.core.values import HandleValue, string_value
from idresolve.nodes.templates import (
    TemplateCache,
    TemplateNeeded,
    TemplateUnavailable,
    check_template_write,
    template_use,
)

LABEL = {"zh": "字段", "en": "Field"}


def template(name: str = "t", version: int = 1):  # type: ignore[no-untyped-def]
    return parse_definition({"name": name, "version": version, "label": LABEL,
                             "fields": [{"index": 2000, "name": "a", "type": "string", "label": LABEL}]})


def record(*versions: int, name: str = "t", ttl_s: int = 600) -> tuple[HandleValue, ...]:
    return tuple(version_value(template(name, v), ttl_s=ttl_s) for v in versions)


REF = TemplateRef("88.1/TPL-t", 1)


def test_a_fetched_version_is_kept_for_its_ttl_capped() -> None:
    cache = TemplateCache(ttl_cap_s=300)
    assert cache.get(REF, 0) is None
    t = cache.learn(REF, record(1, ttl_s=600), 100.0)
    assert t.version == 1 and cache.get(REF, 399.9) is t  # min(600, cap 300)
    assert cache.get(REF, 400.0) is None and cache.fetched == 1
    # The handle matches case-insensitively, the version exactly.
    assert cache.get(TemplateRef("88.1/tpl-T", 1), 399.0) is t
    assert cache.get(TemplateRef("88.1/TPL-t", 2), 399.0) is None


def test_local_versions_stay_until_their_record_changes() -> None:
    cache = TemplateCache()
    t = cache.learn(REF, record(1), 0.0, local=True)
    assert cache.get(REF, 1e12) is t and cache.fetched == 0
    cache.forget("88.1/tpl-t")
    assert cache.get(REF, 0.0) is None and len(cache) == 0


def test_negative_answers_are_remembered_briefly() -> None:
    cache = TemplateCache(negative_ttl_s=30)
    with pytest.raises(InvalidValue, match="does not exist"):
        cache.learn(REF, None, 0.0)
    with pytest.raises(InvalidValue, match="does not exist"):
        cache.get(REF, 29.0)
    assert cache.get(REF, 30.0) is None
    with pytest.raises(InvalidValue, match="has no version 3"):
        cache.learn(TemplateRef("88.1/TPL-t", 3), record(1, 2), 0.0)
    with pytest.raises(InvalidValue, match="no template definition"):
        cache.learn(REF, (string_value(1, "URL", "u"),), 0.0)


def test_stale_copies_only_for_templates_that_were_there() -> None:
    cache = TemplateCache(ttl_cap_s=10, stale_grace_s=60)
    cache.learn(REF, record(1), 0.0)
    assert cache.get(REF, 20.0) is None
    assert cache.keep_stale(REF, 20.0) and cache.get(REF, 79.0) is not None and cache.get(REF, 80.0) is None
    missing = TemplateRef("88.1/TPL-none", 1)
    assert not cache.keep_stale(missing, 0.0)
    with pytest.raises(InvalidValue):
        cache.learn(missing, None, 0.0)
    assert not cache.keep_stale(missing, 100.0)  # a "does not exist" is never kept past its time


def test_the_cache_is_bounded_and_drops_whole_templates_oldest_first() -> None:
    cache = TemplateCache(entries=4)
    for i in range(6):
        cache.learn(TemplateRef(f"88.1/TPL-t{i}", 1), record(1), 0.0)
    assert len(cache) == 4
    assert cache.get(TemplateRef("88.1/TPL-t0", 1), 1.0) is None
    assert cache.get(TemplateRef("88.1/TPL-t5", 1), 1.0) is not None


def test_template_use_finds_the_reference_and_definitions_in_one_pass() -> None:
    plain = template_use([string_value(1, "URL", "u")])
    assert plain.ref is None and not plain.defines
    use = template_use([REF.to_value(), *record(1)])
    assert use.ref == REF and use.defines
    with pytest.raises(InvalidValue, match="must have type TEMPLATE"):
        template_use([HandleValue(1001, "URL", b"88.1/TPL-t@1")])


def test_template_writes_must_be_canonical() -> None:
    t = template()
    check_template_write((), (version_value(t),))
    pretty = HandleValue(1101, "TEMPLATE_DEFINITION", t.to_bytes().replace(b",", b", "))
    with pytest.raises(InvalidValue, match="canonical form"):
        check_template_write((), (pretty,))
    with pytest.raises(InvalidValue, match="cannot be changed"):
        check_template_write((version_value(t),), (pretty,))


def test_the_unavailable_answer_is_code_2_and_http_503() -> None:
    need = TemplateNeeded((REF, TemplateRef("88.1/TPL-u", 2)))
    assert need.code == ResponseCode.ERROR and need.http_status == 503 and http_status(need.code) == 500
    assert "templates 88.1/TPL-t@1, 88.1/TPL-u@2 are not held" in need.message
    bare = need.without_resolver()
    assert isinstance(bare, TemplateUnavailable) and not isinstance(bare, TemplateNeeded)
    assert "--template-resolver" in bare.message and bare.http_status == 503
