"""Metadata templates, the pure core: definitions, patterns, validation.

Table-driven cases for each type and rule (pass and fail), hostile definitions (huge, deep, thousands
of fields, duplicates, catastrophic patterns), and hypothesis properties: parsing and validation return
a result or raise ``InvalidValue``, nothing else, for any input.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idresolve.core.codes import ResponseCode, http_status
from idresolve.core.errors import HandleError, InvalidHandle, InvalidValue
from idresolve.core.handles import parse_handle
from idresolve.core.templates import (
    MAX_DEFINITION_BYTES,
    MAX_FIELDS,
    MAX_SOURCE_BYTES,
    FieldProblem,
    FieldType,
    Template,
    TemplateViolation,
    check_record,
    compile_pattern,
    parse_definition,
    parse_definition_text,
    validate,
)
from idresolve.core.templates.fields import PLAIN_HANDLE, PLAIN_URL, handle_problem, url_problem_full
from idresolve.core.templates.patterns import MAX_PATTERN_CHARS
from idresolve.core.values import HandleValue, string_value

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LABEL = {"zh": "字段", "en": "Field"}


def fdef(index: int, name: str, ftype: str, **rules: Any) -> dict[str, Any]:
    return {"index": index, "name": name, "type": ftype, "label": LABEL, **rules}


def tdef(*fields: dict[str, Any], name: str = "test", version: int = 1) -> dict[str, Any]:
    return {"name": name, "version": version, "label": {"zh": "测试模板", "en": "Test template"},
            "fields": list(fields)}


ALL_TYPES = tdef(
    fdef(2000, "s", "string", maxLength=5),
    fdef(2001, "p", "string", pattern="[A-Z]{2}[0-9]{3}"),
    fdef(2002, "i", "integer", minimum=-10, maximum=100),
    fdef(2003, "d", "decimal", minimum=0.5, maximum=99.5, unit="kg"),
    fdef(2004, "b", "boolean"),
    fdef(2005, "dt", "date"),
    fdef(2006, "ts", "datetime"),
    fdef(2007, "e", "enumeration", values=["A", {"value": "B", "label": {"zh": "乙", "en": "Bee"}}]),
    fdef(2008, "u", "url"),
    fdef(2009, "r", "reference"),
    fdef(2010, "req", "string", required=True),
)


@pytest.fixture(scope="module")
def every_type() -> Template:
    return parse_definition(ALL_TYPES)


def problems_of(template: Template, values: list[HandleValue]) -> dict[int, str]:
    return {p.index: p.problem for p in validate(template, values)}


# -- the validation table ---------------------------------------------------------------------------

REQ = string_value(2010, "req", "present")

TABLE: list[tuple[int, str, bytes, str | None]] = [
    # string, maxLength 5
    (2000, "s", b"abcde", None),
    (2000, "s", "汉字也算字符".encode()[:15], None),  # five characters, fifteen bytes
    (2000, "s", b"abcdef", "longer than 5 characters (6)"),
    (2000, "s", b"a\x00b", "holds control or invisible characters"),
    (2000, "s", b"a\nb", "holds control or invisible characters"),
    (2000, "s", b"a\tb", "holds control or invisible characters"),
    (2000, "s", "ab\u202ec".encode(), "holds control or invisible characters"),  # a bidi override
    (2000, "s", "a\u2028b".encode(), "holds control or invisible characters"),  # a line separator
    (2000, "s", "十\u3000公斤".encode(), None),  # the ideographic space is a space, not a control
    (2000, "s", "a\u00a0b".encode(), None),
    (2000, "s", b"\xff\xfe", "not valid UTF-8 text"),
    (2000, "s", b"", "empty"),
    # pattern
    (2001, "p", b"AB123", None),
    (2001, "p", b"AB1234", "does not match the pattern [A-Z]{2}[0-9]{3}"),  # whole value, not a prefix
    (2001, "p", b"xAB123", "does not match the pattern"),
    (2001, "p", b"ab123", "does not match the pattern"),
    # integer, -10..100
    (2002, "i", b"0", None),
    (2002, "i", b"-10", None),
    (2002, "i", b"100", None),
    (2002, "i", b"101", "above the maximum 100"),
    (2002, "i", b"-11", "below the minimum -10"),
    (2002, "i", b"007", "not an integer"),
    (2002, "i", b"+5", "not an integer"),
    (2002, "i", b"1.0", "not an integer"),
    (2002, "i", b"1_000", "not an integer"),
    (2002, "i", b" 5", "not an integer"),
    (2002, "i", "٣".encode(), "not an integer"),  # an Arabic-Indic digit: int() would take it
    # decimal, 0.5..99.5
    (2003, "d", b"12.25", None),
    (2003, "d", b"0.5", None),
    (2003, "d", b"99.5", None),
    (2003, "d", b"42", None),
    (2003, "d", b"99.51", "above the maximum 99.5"),
    (2003, "d", b"0.49", "below the minimum 0.5"),
    (2003, "d", b"1e3", "not a decimal number"),
    (2003, "d", b".5", "not a decimal number"),
    (2003, "d", b"NaN", "not a decimal number"),
    (2003, "d", b"1,5", "not a decimal number"),
    # boolean
    (2004, "b", b"true", None),
    (2004, "b", b"false", None),
    (2004, "b", b"True", "not a boolean"),
    (2004, "b", b"1", "not a boolean"),
    # date
    (2005, "dt", b"2021-06-02", None),
    (2005, "dt", b"2024-02-29", None),
    (2005, "dt", b"2023-02-29", "not a calendar date"),
    (2005, "dt", b"2021-13-01", "not a calendar date"),
    (2005, "dt", b"20210602", "not a date (YYYY-MM-DD)"),
    (2005, "dt", b"2021-6-2", "not a date (YYYY-MM-DD)"),
    (2005, "dt", b"2021-06-02T00:00:00Z", "not a date (YYYY-MM-DD)"),
    # datetime
    (2006, "ts", b"2021-06-02T08:30:00+08:00", None),
    (2006, "ts", b"2021-06-02T00:30:00Z", None),
    (2006, "ts", b"2021-06-02T08:30:00.125-05:00", None),
    (2006, "ts", b"2021-06-02T08:30:00", "not a date-time"),  # a zone is required
    (2006, "ts", b"2021-06-02 08:30:00+08:00", "not a date-time"),
    (2006, "ts", b"2021-06-02T25:30:00+08:00", "not a real date and time"),
    (2006, "ts", b"2021-06-02T08:30:00+24:00", "not a real date and time"),
    # enumeration
    (2007, "e", b"A", None),
    (2007, "e", b"B", None),
    (2007, "e", b"a", "not one of the allowed values: A, B"),
    (2007, "e", b"C", "not one of the allowed values: A, B"),
    # url
    (2008, "u", b"https://example.com/p?q=1", None),
    (2008, "u", b"http://127.0.0.1:8000/x", None),
    (2008, "u", b"ftp://example.com/x", "not an http:// or https:// URL"),
    (2008, "u", b"https://", "not an http:// or https:// URL"),
    (2008, "u", b"https://exa mple.com/", "not an http:// or https:// URL"),
    (2008, "u", b"https://[::1/", "not an http:// or https:// URL"),
    (2008, "u", b"https://example.com:99999/", "not an http:// or https:// URL"),
    # reference
    (2009, "r", b"88.118.8/RC2106011", None),
    (2009, "r", "88.118.8/胶料-1".encode(), None),
    (2009, "r", b"RC2106011", "not an identifier (prefix/suffix)"),
    (2009, "r", b"88..1/x", "not an identifier (prefix/suffix)"),
    (2009, "r", b"88.1/", "not an identifier (prefix/suffix)"),
]


@pytest.mark.parametrize(("index", "name", "data", "expected"), TABLE)
def test_validation_table(every_type: Template, index: int, name: str, data: bytes, expected: str | None) -> None:
    found = problems_of(every_type, [REQ, HandleValue(index, name, data)])
    if expected is None:
        assert found == {}
    else:
        assert set(found) == {index}
        assert expected in found[index]


def test_every_type_is_in_the_table() -> None:
    names = {f["name"]: f["type"] for f in ALL_TYPES["fields"]}
    assert {names[name] for _, name, _, _ in TABLE} | {"string"} == {t.value for t in FieldType}


def test_record_rules(every_type: Template) -> None:
    # a required field missing, an unknown index in the template range, the wrong value type, twice
    found = problems_of(every_type, [HandleValue(2004, "b", b"true"), HandleValue(2004, "b", b"false"),
                                     HandleValue(2050, "extra", b"x"), HandleValue(2002, "DESC", b"5")])
    assert found[2010] == "required field missing"
    assert "is not a field of test version 1" in found[2050]
    assert "type must be the field name 'i'" in found[2002]
    assert found[2004] == "given twice"
    # values outside the template range are not the template's business
    assert problems_of(every_type, [REQ, string_value(1, "URL", "not checked"), string_value(2, "DESC", "\x00"),
                                    string_value(1500, "OTHER", "x")]) == {}


def test_template_reference_at_1001(every_type: Template) -> None:
    good = string_value(1001, "TEMPLATE", "88.118/TPL-test@1")
    assert problems_of(every_type, [REQ, good]) == {}
    for value, expected in [
        (string_value(1001, "TEMPLATE", "88.118/TPL-test@2"), "names version 2"),
        (string_value(1001, "TEMPLATE", "88.118/TPL-test"), "is not <template handle>@<version>"),
        (string_value(1001, "TEMPLATE", "TPL-test@1"), "template reference"),
        (string_value(1001, "URL", "88.118/TPL-test@1"), "must have type TEMPLATE"),
        (HandleValue(1001, "TEMPLATE", b"\xff@1"), "not UTF-8"),
        (HandleValue(1001, "TEMPLATE", b"88.1/" + b"x" * 5000 + b"@1"), "longer than a handle and a version"),
        (HandleValue(1001, "TEMPLATE", ("88.1/" + "x" * 251 + "@1").encode()), "longer than 255"),
    ]:
        found = problems_of(every_type, [REQ, value])
        assert list(found) == [1001] and expected in found[1001], (value, found)


def test_one_error_names_every_failing_field(every_type: Template) -> None:
    values = [HandleValue(2002, "i", b"x"), HandleValue(2007, "e", b"Z"), HandleValue(2008, "u", b"nope")]
    with pytest.raises(TemplateViolation) as info:
        check_record(every_type, values, handle="88.100/x")
    err = info.value
    assert isinstance(err, InvalidValue) and isinstance(err, HandleError)
    assert err.code == ResponseCode.INVALID_VALUE == 202 and http_status(err.code) == 400 == err.http_status
    assert err.handle == "88.100/x"
    assert [p.index for p in err.problems] == [2002, 2007, 2008, 2010]
    for name in ("i (2002)", "e (2007)", "u (2008)", "req (2010)"):
        assert name in err.message
    assert "4 problems" in err.message
    assert err.problems[0] == FieldProblem(2002, "i", err.problems[0].problem)
    assert err.problems[0].to_json()["index"] == 2002


def test_many_problems_keep_the_message_bounded(every_type: Template) -> None:
    values = [HandleValue(3000 + i, "junk", b"x") for i in range(500)]
    with pytest.raises(TemplateViolation) as info:
        check_record(every_type, values)
    assert len(info.value.problems) == 501
    assert "and 461 more" in info.value.message and len(info.value.message) < 6000


def test_fitting_values_pass(every_type: Template) -> None:
    values = [REQ] + [HandleValue(i, n, d) for i, n, d, e in TABLE if e is None and i != 2000] + [
        HandleValue(2000, "s", b"abc")]
    by_index = {v.index: v for v in values}  # one value per index
    check_record(every_type, list(by_index.values()))


# -- definitions: strict parsing -----------------------------------------------------------------------

def mistake(raw: object) -> str:
    with pytest.raises(InvalidValue) as info:
        parse_definition(raw) if not isinstance(raw, str | bytes) else parse_definition_text(raw)
    assert info.value.code == 202
    return info.value.message


def with_field(**changes: Any) -> dict[str, Any]:
    field = fdef(2000, "f", "string")
    field.update(changes)
    return tdef(field)


@pytest.mark.parametrize(("raw", "expected"), [
    ([], "must be a JSON object"),
    ({**tdef(fdef(2000, "f", "string")), "name": "Tyre Batch"}, "name: 'Tyre Batch' is not a template name"),
    ({**tdef(fdef(2000, "f", "string")), "version": 0}, "version: must be between 1 and 32"),
    ({**tdef(fdef(2000, "f", "string")), "version": True}, "version: must be an integer"),
    ({**tdef(fdef(2000, "f", "string")), "label": {"zh": "只有中文"}}, "label.en: must be a non-empty string"),
    ({**tdef(fdef(2000, "f", "string")), "extends": "88.118/TPL-base@1"}, "unknown key 'extends'"),
    ({**tdef(fdef(2000, "f", "string")), "fields": []}, "fields: must be a non-empty list"),
    ({**tdef(fdef(2000, "f", "string")), "fields": {"2000": {}}}, "fields: must be a non-empty list"),
    (with_field(index=1999), "fields[0].index: must be between 2000"),
    (with_field(index=1001), "fields[0].index: must be between 2000"),
    (with_field(index="2000"), "fields[0].index: must be an integer"),
    (with_field(name="HS_ADMIN"), "Handle System's own types"),
    (with_field(name="1st"), "is not a field name"),
    (with_field(name="bad name"), "is not a field name"),
    (with_field(type="URL"), "fields[0] (2000 f).type: must be one of string, integer"),
    (with_field(requred=True), "unknown key 'requred' (did you mean 'required'?)"),
    (with_field(required="yes"), "required: must be true or false"),
    (with_field(label={"zh": "名", "en": "x" * 65}), "label.en: longer than 64 characters"),
    (with_field(unit="mm"), "unit: applies only to integer and decimal fields"),
    (with_field(minimum=1), "minimum: applies only to integer and decimal fields"),
    (with_field(values=["a"]), "values: applies only to enumeration fields"),
    (with_field(maxLength=0), "maxLength: must be between 1 and 255"),
    (with_field(maxLength=256), "maxLength: must be between 1 and 255"),
    (with_field(pattern="(a"), "is not valid RE2 syntax"),
    (with_field(pattern=""), "a pattern must be a non-empty string"),
    (with_field(examples=["x" * 256]), "does not fit the field: longer than 255"),
    (with_field(pattern="[0-9]+", examples=["12a"]), "'12a' does not fit the field: does not match"),
    (with_field(examples=[]), "examples: must be a list of 1 to 8 strings"),
    (with_field(examples=[5]), "must be a string"),
    (with_field(type="enumeration"), "an enumeration needs a non-empty list of values"),
    (with_field(type="enumeration", values=["a", "a"]), "value 'a' is listed twice"),
    (with_field(type="enumeration", values=[{"value": "a", "lable": {}}]), "unknown key 'lable'"),
    (with_field(type="enumeration", values=["a"], maxLength=3), "maxLength: applies only to string, url"),
    (with_field(type="integer", minimum=1.5), "minimum: must be an integer for an integer field"),
    (with_field(type="integer", minimum=10, maximum=1), "maximum: is below the minimum 10"),
    (with_field(type="decimal", minimum=True), "minimum: must be a finite number"),
    (with_field(type="integer", maximum=10**30), "maximum: must be between -1000000000000000000 and"),
    (with_field(type="decimal", minimum=-1e300), "minimum: must be between -1000000000000000000 and"),
    (with_field(examples=["\ud800"]), "does not fit the field: not valid UTF-8 text"),
    (with_field(label={"zh": "两\n行", "en": "x"}), "label.zh: holds control or invisible characters"),
    (with_field(description="x\u202ey"), "description: holds control or invisible characters"),
    (with_field(type="decimal", maximum="9"), "maximum: must be a finite number"),
    (with_field(type="integer", examples=["007"]), "'007' does not fit the field: not an integer"),
    (tdef(fdef(2000, "a", "string"), fdef(2000, "b", "string")), "2000 is already the index of a"),
    (tdef(fdef(2000, "a", "string"), fdef(2001, "a", "string")), "a is already the name of field 2000"),
    ('{"name": "x", "name": "y"}', "key 'name' appears twice in one object"),
    ('{"name": "x", "fields": [{"minimum": NaN}]}', "NaN is not a JSON number"),
    ('{"name": "x", "version": Infinity}', "Infinity is not a JSON number"),
    ('{"name": ', "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_definition_mistakes(raw: object, expected: str) -> None:
    assert expected in mistake(raw)


def test_every_mistake_is_reported_at_once() -> None:
    message = mistake(tdef(fdef(1999, "a", "int"), fdef(2001, "b", "string", unit="kg"), name="Bad", version=99))
    for part in ("name:", "version:", "fields[0].index", "(? a).type", "(2001 b).unit"):
        assert part in message


def test_problems_are_capped() -> None:
    message = mistake(tdef(*[fdef(2000 + i, "x", "nope") for i in range(MAX_FIELDS)]))
    assert "fix these first" in message and message.count(";") < 25


def test_canonical_form_round_trips(every_type: Template) -> None:
    again = parse_definition_text(every_type.to_bytes())
    assert again == every_type and again.to_bytes() == every_type.to_bytes()
    assert json.loads(every_type.to_bytes()) == every_type.to_json()
    assert [f.index for f in parse_definition(tdef(fdef(2005, "b", "string"), fdef(2001, "a", "string"))).fields] \
        == [2001, 2005]  # canonical order is by index


# -- hostile definitions ---------------------------------------------------------------------------

def test_huge_definitions_are_refused_before_parsing() -> None:
    big = '{"name": "x", "description": "' + "a" * MAX_SOURCE_BYTES + '"}'
    assert "longer than 65536 bytes" in mistake(big)
    assert "longer than 65536 bytes" in mistake(big.encode())


def test_deep_nesting_is_refused() -> None:
    assert "nested too deeply" in mistake("[" * 30_000 + "]" * 30_000)
    deep = '{"name": "x", "fields": [' + '{"a":' * 10_000 + "1" + "}" * 10_000 + "]}"
    assert "nested too deeply" in mistake(deep)
    # nesting inside the format's own places is refused by the type checks, not walked
    nested: Any = "x"
    for _ in range(500):
        nested = {"zh": nested, "en": nested}
    assert "label.zh: must be a non-empty string" in mistake({**tdef(fdef(2000, "f", "string")), "label": nested})


def test_thousands_of_fields_are_refused_without_reading_them() -> None:
    fields = [{"index": "not even a field"}] * 5000
    message = mistake({**tdef(fdef(2000, "f", "string")), "fields": fields})
    assert f"at most {MAX_FIELDS} fields, this one has 5000" in message
    assert "index" not in message  # the fields themselves were never looked at


def test_huge_enumerations_are_refused() -> None:
    assert "more than 200 values (10000)" in mistake(with_field(type="enumeration",
                                                                values=[str(i) for i in range(10_000)]))


def test_canonical_size_is_bounded() -> None:
    fields = [fdef(2000 + i, f"f{i}", "string", description="d" * 300) for i in range(MAX_FIELDS)]
    assert f"more than {MAX_DEFINITION_BYTES}" in mistake(tdef(*fields))


def test_a_definition_cannot_recurse() -> None:
    # No includes or inheritance exist; a reference field may name the template's own record (a part
    # naming its parent part): it is only an identifier, never resolved, so validation stays pure.
    t = parse_definition(tdef(fdef(2000, "parent", "reference", examples=["88.106/TPL-test"])))
    assert validate(t, [string_value(2000, "parent", "88.106/TPL-test")]) == []
    assert "unknown key '$ref'" in mistake({**tdef(fdef(2000, "f", "string")), "$ref": "#"})
    assert "unknown key 'include'" in mistake(with_field(include="88.106/TPL-test@1"))


# -- patterns never hang -------------------------------------------------------------------------------

CATASTROPHIC = [r"(a+)+$", r"(a|a)*b", r"(a*)*b", r"(x+x+)+y", r"(\w+\s?)+$", r"^(([a-z])+.)+[A-Z]([a-z])+$"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_catastrophic_patterns_match_in_linear_time(pattern: str) -> None:
    # Python's re needs about 2**n steps for these on n characters and a failing end; at n = 100,000
    # that is beyond any hang guard, so finishing at all shows the engine does not backtrack.
    p = compile_pattern(pattern)
    assert p.matches(b"a" * 100_000 + b"!") is False
    assert p.program_size < 100


def test_catastrophic_pattern_in_a_template_on_every_value() -> None:
    t = parse_definition(with_field(pattern=r"(a+)+b"))
    values = [HandleValue(2000, "f", b"a" * 254 + b"c")]
    for _ in range(2_000):  # 2,000 records of the worst input a field can hold
        assert [p.index for p in validate(t, values)] == [2000]


@pytest.mark.parametrize(("pattern", "expected"), [
    (r"(a)\1", "invalid escape sequence"),  # backreferences need backtracking: refused
    (r"(?=a)a", "invalid perl operator"),
    (r"(?<=a)b", "invalid perl operator"),
    (r"((a{100}){100}){100}", "invalid repetition size"),
    (r"[\p{L}]{1,255}", "pattern too large"),
    ("a" * (MAX_PATTERN_CHARS + 1), f"longer than {MAX_PATTERN_CHARS} characters"),
    ("a\x00", "control characters"),
])
def test_patterns_that_could_cost_too_much_are_refused(pattern: str, expected: str) -> None:
    with pytest.raises(InvalidValue) as info:
        compile_pattern(pattern, where="fields[0].pattern")
    assert expected in info.value.message and "fields[0].pattern" in info.value.message


# -- properties: a result or InvalidValue, nothing else ----------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children,
                                                                                      max_size=4),
                    max_leaves=20)
FIELD_KEYS = ["index", "name", "label", "type", "required", "description", "unit", "maxLength", "pattern",
              "values", "minimum", "maximum", "examples", "bogus"]
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=4)  # surrogates and controls too
RULE_VALUES = st.one_of(JSON, st.sampled_from([t.value for t in FieldType]), st.integers(1999, 2003),
                        st.integers(-(10**30), 10**30), st.sampled_from(["[0-9]+", "(a+)+", "(", "mm", "f", "g"]),
                        st.just(LABEL), st.lists(st.sampled_from(["A", "B", "7"]), max_size=3), ANY_TEXT,
                        st.lists(ANY_TEXT, min_size=1, max_size=3), st.fixed_dictionaries({"zh": ANY_TEXT, "en": ANY_TEXT}))


@st.composite
def near_definitions(draw: st.DrawFn) -> dict[str, Any]:
    """Definitions close to valid: a valid skeleton with fields whose keys and values are drawn."""
    fields = []
    for i in range(draw(st.integers(0, 4))):
        field = fdef(2000 + i, f"f{i}", draw(st.sampled_from([t.value for t in FieldType])))
        field.update(draw(st.dictionaries(st.sampled_from(FIELD_KEYS), RULE_VALUES, max_size=4)))
        fields.append(field)
    raw = tdef(*fields)
    raw.update(draw(st.dictionaries(st.sampled_from(["name", "version", "label", "description", "x"]), JSON,
                                    max_size=2)))
    return raw


def parse_or_refuse(raw: Any) -> Template | None:
    try:
        return parse_definition(raw) if not isinstance(raw, str | bytes) else parse_definition_text(raw)
    except InvalidValue:
        return None


@FAST
@given(st.one_of(JSON, near_definitions()))
def test_parsing_any_object_gives_a_template_or_invalid_value(raw: Any) -> None:
    t = parse_or_refuse(copy.deepcopy(raw))
    if t is not None:
        assert parse_definition_text(t.to_bytes()) == t


@FAST
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300), near_definitions().map(json.dumps)))
def test_parsing_any_text_gives_a_template_or_invalid_value(raw: str | bytes) -> None:
    parse_or_refuse(raw)


VALUES = st.builds(HandleValue, st.one_of(st.integers(1, 2**31 - 1), st.integers(1000, 2012)),
                   st.one_of(st.sampled_from(["s", "p", "i", "d", "b", "e", "TEMPLATE", "req"]), st.text(max_size=8)),
                   st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode),
                             st.sampled_from([b"12", b"true", b"2021-06-02", b"88.1/x@1", b"A", b"https://e.cn"])))


@FAST
@given(st.lists(VALUES, max_size=12))
def test_validation_of_any_values_gives_a_list(values: list[HandleValue]) -> None:
    t = parse_definition(ALL_TYPES)
    problems = validate(t, values)
    assert all(isinstance(p, FieldProblem) and p.problem for p in problems)
    assert [p.index for p in problems] == sorted(p.index for p in problems)
    if problems:
        with pytest.raises(TemplateViolation):
            check_record(t, values)
    else:
        check_record(t, values)
        assert any(v.index == 2010 for v in values)


@FAST
@given(near_definitions(), st.lists(VALUES, max_size=8))
def test_validation_against_any_template_gives_a_list(raw: dict[str, Any], values: list[HandleValue]) -> None:
    t = parse_or_refuse(raw)
    if t is not None:
        assert isinstance(validate(t, values), list)


# -- fast paths agree with the full checks -------------------------------------------------------------

URLISH = st.builds(lambda scheme, host, rest: f"{scheme}{host}{rest}",
                   st.sampled_from(["http://", "https://", "ftp://", "https:/", ""]),
                   st.text(alphabet="abc-.0[]:@é", max_size=12),
                   st.text(alphabet="/?#:=&%[] ~ab\x7f", max_size=12))
HANDLISH = st.builds(lambda a, b: f"{a}/{b}" if b is not None else a,
                     st.text(alphabet="89.ab_- é\t", max_size=10),
                     st.none() | st.text(alphabet="/ab@ .\x7f\x85é~", max_size=10))


@settings(max_examples=400, deadline=None)
@given(URLISH)
def test_the_plain_url_fast_path_accepts_only_what_the_full_check_accepts(text: str) -> None:
    if PLAIN_URL(text):
        assert url_problem_full(text) is None


@settings(max_examples=400, deadline=None)
@given(st.one_of(HANDLISH, st.text(max_size=20)))
def test_the_handle_check_agrees_with_parse_handle(text: str) -> None:
    try:
        parse_handle(text)
        valid = True
    except InvalidHandle:
        valid = False
    assert (handle_problem(text) is None) == valid
    if PLAIN_HANDLE(text):
        assert valid


PATTERNS = ["[0-9]{7}", "L[0-9]{2}", "(a+)+b", "[\\p{Han}]+", "x|yz*", "(0[1-9]|[1-4][0-9]|5[0-3])[0-9]{2}", ".*"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATTERNS), st.one_of(st.binary(max_size=12), st.text(alphabet="0123456789abxyzL汉", max_size=8)
                                            .map(str.encode)))
def test_the_fast_matcher_agrees_with_fullmatch(pattern: str, data: bytes) -> None:
    p = compile_pattern(pattern)
    assert p.matcher()(data) == p.matches(data)
