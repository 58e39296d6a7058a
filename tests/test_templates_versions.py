"""Metadata templates as identifiers: template records and versions, the 1001 reference, diffs, the
five shipped templates and the value generator for seeding."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idresolve.core.errors import InvalidValue
from idresolve.core.records import MAX_RECORD_BYTES, Record
from idresolve.core.templates import (
    MAX_DEFINITION_BYTES,
    MAX_TEMPLATE_VERSIONS,
    TEMPLATE_DEFINITION_TYPE,
    ChangeKind,
    FieldType,
    Template,
    TemplateRef,
    check_record,
    check_template_record_change,
    diff_templates,
    generate_values,
    is_template_record,
    new_version_value,
    parse_definition,
    parse_definition_text,
    stored_versions,
    template_from_values,
    template_handle,
    template_ref_of,
    validate,
    version_value,
)
from idresolve.core.values import (
    TEMPLATE_REF_INDEX,
    HandleValue,
    admin_value,
    check_values,
    string_value,
    value_from_json,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "config" / "templates").glob("*.json"))
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LABEL = {"zh": "字段", "en": "Field"}


def load(name: str) -> Template:
    return parse_definition_text((ROOT / "config" / "templates" / f"{name}.json").read_bytes())


def raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "config" / "templates" / f"{name}.json").read_bytes())
    return data


def field_of(raw_def: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in raw_def["fields"] if f["name"] == name)
    return found


# -- the reference at 1001 ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "handle", "version"), [
    ("88.118/TPL-tyre-batch@1", "88.118/TPL-tyre-batch", 1),
    ("88.118/TPL-tyre-batch@32", "88.118/TPL-tyre-batch", 32),
    ("88.1/odd@name@3", "88.1/odd@name", 3),  # the version follows the last @
])
def test_reference_parses(text: str, handle: str, version: int) -> None:
    ref = TemplateRef.parse(text)
    assert (ref.handle, ref.version) == (handle, version) and str(ref) == text
    value = ref.to_value()
    assert (value.index, value.type) == (TEMPLATE_REF_INDEX, "TEMPLATE")
    assert TemplateRef.from_value(value) == ref and template_ref_of([string_value(1, "URL", "x"), value]) == ref


@pytest.mark.parametrize("text", ["88.118/TPL-tyre-batch", "88.118/TPL-tyre-batch@", "88.118/TPL-x@0",
                                  "88.118/TPL-x@01", "88.118/TPL-x@33", "88.118/TPL-x@v1", "88.118/TPL-x@+1",
                                  "TPL-x@1", "/x@1", "88.118/@1", "@1", ""])
def test_malformed_references_are_invalid_values(text: str) -> None:
    with pytest.raises(InvalidValue):
        TemplateRef.parse(text)


def test_reference_cache_key_folds_case() -> None:
    assert TemplateRef.parse("88.118/TPL-Tyre@1").key == TemplateRef.parse("88.118/tpl-tyre@1").key
    assert TemplateRef.parse("88.118/TPL-tyre@1").key != TemplateRef.parse("88.118/TPL-tyre@2").key
    assert template_ref_of([string_value(1, "URL", "x")]) is None


@FAST
@given(st.text(max_size=60))
def test_any_reference_text_parses_or_is_an_invalid_value(text: str) -> None:
    try:
        ref = TemplateRef.parse(text)
    except InvalidValue:
        return
    assert TemplateRef.parse(str(ref)) == ref


# -- the template record ------------------------------------------------------------------------------

def test_template_handle_convention() -> None:
    assert template_handle("88.118", "tyre-batch") == "88.118/TPL-tyre-batch"


def test_a_template_record_is_an_ordinary_record() -> None:
    t = load("tyre-batch")
    values = (admin_value(100, "0.NA/88.118", 300, 0xFFF), version_value(t))
    assert check_values(values) == values  # what every write path already checks
    assert values[1].index == 1101 and values[1].type == TEMPLATE_DEFINITION_TYPE
    assert template_from_values(values) == t and template_from_values(values, 1) == t
    record = Record("88.118/TPL-tyre-batch", values)
    assert Record.decode(record.encode()) == record and is_template_record(values)
    assert not is_template_record([string_value(1, "URL", "x")])


def test_the_largest_template_record_fits_the_record_limit() -> None:
    fields = [{"index": 2000 + i, "name": f"f{i}", "type": "string", "label": LABEL, "description": "d" * 100}
              for i in range(100)]
    base = {"name": "big", "label": LABEL, "fields": fields}
    room = MAX_DEFINITION_BYTES - len(parse_definition({**base, "version": 10}).to_bytes())
    for i, f in enumerate(fields):  # grow the definition to the limit, byte for byte
        f["description"] += "d" * (room // 100 + (room % 100 if i == 0 else 0))
    assert len(parse_definition({**base, "version": 10}).to_bytes()) == MAX_DEFINITION_BYTES
    values: list[HandleValue] = []
    for v in range(1, MAX_TEMPLATE_VERSIONS + 1):
        values.append(new_version_value(values, parse_definition({**base, "version": v})))
    record = Record("88.118/TPL-big", tuple(values))
    assert len(record.encode()) < MAX_RECORD_BYTES
    assert Record.decode(record.encode()) == record
    with pytest.raises(InvalidValue, match="between 1 and 32"):
        parse_definition({**base, "version": MAX_TEMPLATE_VERSIONS + 1})


def v2_of_tyre() -> Template:
    d = raw("tyre-batch")
    d["version"] = 2
    field_of(d, "productionDate")["required"] = True  # incompatible: a new required field
    d["fields"].append({"index": 2018, "name": "treadDepth", "type": "decimal", "unit": "mm",
                        "label": {"zh": "花纹深度", "en": "Tread depth"}, "minimum": 1, "maximum": 30})
    return parse_definition(d)


def test_versions_are_added_in_order() -> None:
    v1, v2 = load("tyre-batch"), v2_of_tyre()
    with pytest.raises(InvalidValue, match="must be version 1"):
        new_version_value([], v2)
    record = [new_version_value([], v1)]
    with pytest.raises(InvalidValue, match=r"must be version 2 \(its latest version is 1\)"):
        new_version_value(record, v1)
    record.append(new_version_value(record, v2))
    assert sorted(stored_versions(record)) == [1, 2]
    assert template_from_values(record) == v2 and template_from_values(record, 1) == v1
    with pytest.raises(InvalidValue, match="has no version 3"):
        template_from_values(record, 3, handle="88.118/TPL-tyre-batch")
    other = parse_definition({**raw("steel-coil"), "version": 3})
    with pytest.raises(InvalidValue, match="holds template tyre-batch, not steel-coil"):
        new_version_value(record, other)


def test_published_versions_never_change() -> None:
    v1, v2 = load("tyre-batch"), v2_of_tyre()
    one = [version_value(v1)]
    check_template_record_change([], one)  # publishing
    check_template_record_change(one, one + [version_value(v2)])  # the next version
    check_template_record_change(one, one + [string_value(1, "DESC", "tyres")])  # other values: free
    edited = parse_definition({**raw("tyre-batch"), "description": "changed"})
    for new, expected in [
        ([], "cannot be removed"),
        ([version_value(edited)], "cannot be changed: publish version 2 instead"),
        (one + [HandleValue(1103, TEMPLATE_DEFINITION_TYPE, v2.to_bytes())], "without gaps"),
        (one + [HandleValue(1102, TEMPLATE_DEFINITION_TYPE, v1.to_bytes())], "says version 1"),
        (one + [HandleValue(1200, TEMPLATE_DEFINITION_TYPE, v2.to_bytes())], "must be at index 1101..1132"),
        (one + [HandleValue(1102, TEMPLATE_DEFINITION_TYPE, b"{not json")], "not valid JSON"),
        (one + [version_value(parse_definition({**raw("steel-coil"), "version": 2}))], "holds one template"),
    ]:
        with pytest.raises(InvalidValue, match=expected):
            check_template_record_change(one, new)


def test_stored_records_keep_their_version() -> None:
    """A record made with version 1 still fits after an incompatible version 2: it is checked against
    the version its value 1001 names, which the template record keeps."""
    v1, v2 = load("tyre-batch"), v2_of_tyre()
    template_record = [version_value(v1)]
    made = (TemplateRef("88.118/TPL-tyre-batch", 1).to_value(), string_value(2000, "productName", "Radial tyre"),
            string_value(2001, "batchNumber", "2106023"))
    check_record(template_from_values(template_record, template_ref_of(made).version), made)
    template_record.append(new_version_value(template_record, v2))
    ref = template_ref_of(made)
    assert ref is not None and ref.version == 1
    check_record(template_from_values(template_record, ref.version), made)  # still fits its version
    problems = validate(v2, [v for v in made if v.index != TEMPLATE_REF_INDEX])
    assert [(p.name, p.problem) for p in problems] == [("productionDate", "required field missing")]


# -- diffs ---------------------------------------------------------------------------------------------

def changed(edit: Any, name: str = "tyre-batch") -> tuple[Template, Template]:
    old = raw(name)
    new = copy.deepcopy(old)
    new["version"] = 2
    edit(new)
    return parse_definition(old), parse_definition(new)


def set_rule(field: str, key: str, value: Any) -> Any:
    def edit(d: dict[str, Any]) -> None:
        if value is None:
            field_of(d, field).pop(key, None)
        else:
            field_of(d, field)[key] = value
    return edit


def to_string(d: dict[str, Any]) -> None:
    f = field_of(d, "averageWeight")
    f["type"] = "string"
    for rule in ("unit", "minimum", "maximum"):  # numeric rules do not apply to a string
        del f[rule]


NEW_FIELD = {"index": 2018, "name": "treadDepth", "type": "decimal", "label": LABEL}

DIFF_CASES = [
    # (edit, where, compatible)
    (lambda d: d["fields"].append(NEW_FIELD), "2018 treadDepth", True),
    (lambda d: d["fields"].append({**NEW_FIELD, "required": True}), "2018 treadDepth", False),
    (lambda d: d["fields"].remove(field_of(d, "brand")), "2006 brand", False),
    (set_rule("brand", "required", True), "2006 brand.required", False),
    (set_rule("productName", "required", False), "2000 productName.required", True),
    (set_rule("loadIndex", "type", "decimal"), "2004 loadIndex.type", True),
    (set_rule("averageWeight", "type", "integer"), "2013 averageWeight.type", False),
    (to_string, "2013 averageWeight.type", True),
    (set_rule("brand", "maxLength", 16), "2006 brand.maxLength", False),
    (set_rule("brand", "maxLength", 64), "2006 brand.maxLength", True),
    (set_rule("brand", "pattern", "[A-Za-z \\p{Han}]+"), "2006 brand.pattern", False),
    (set_rule("batchNumber", "pattern", None), "2001 batchNumber.pattern", True),
    (set_rule("batchNumber", "pattern", "[0-9]{7,8}"), "2001 batchNumber.pattern", False),
    (set_rule("speedSymbol", "values", ["L", "M", "N", "P", "Q", "R", "S", "T", "H", "V", "W"]),
     "2005 speedSymbol.values", False),
    (set_rule("speedSymbol", "values", ["L", "M", "N", "P", "Q", "R", "S", "T", "H", "V", "W", "Y", "Z"]),
     "2005 speedSymbol.values", True),
    (set_rule("loadIndex", "minimum", 60), "2004 loadIndex.minimum", False),
    (set_rule("loadIndex", "minimum", None), "2004 loadIndex.minimum", True),
    (set_rule("loadIndex", "maximum", 150), "2004 loadIndex.maximum", False),
    (set_rule("loadIndex", "maximum", 250), "2004 loadIndex.maximum", True),
    (set_rule("averageWeight", "unit", "g"), "2013 averageWeight.unit", False),
    (set_rule("brand", "label", {"zh": "商标", "en": "Trademark"}), "2006 brand.label", True),
    (set_rule("brand", "name", "brandName"), "2006 brandName.name", False),
    (lambda d: d.update(description="Reworded"), "tyre-batch.description", True),
]


@pytest.mark.parametrize(("edit", "where", "compatible"), DIFF_CASES)
def test_diff_finds_the_change_and_its_compatibility(edit: Any, where: str, compatible: bool) -> None:
    old, new = changed(edit)
    d = diff_templates(old, new)
    mine = [c for c in d.changes if c.where == where]
    assert mine, d.to_text()
    assert all(c.compatible == compatible for c in mine), d.to_text()
    assert d.compatible == all(c.compatible for c in d.changes)
    if not compatible:
        assert "[incompatible:" in d.to_text() and "Records keep the version they name" in d.to_text()


@pytest.mark.parametrize(("edit", "where", "compatible"), [c for c in DIFF_CASES if c[2]])
def test_after_a_compatible_change_old_records_still_fit(edit: Any, where: str, compatible: bool) -> None:
    old, new = changed(edit)
    for k in range(40):
        values = generate_values(old, f"88.118.8/T{k}", seed=7)
        assert validate(old, values) == [] and validate(new, values) == [], (where, validate(new, values))


def test_diff_of_equal_versions_and_its_forms() -> None:
    t = load("steel-coil")
    same = diff_templates(t, t)
    assert same.changes == () and same.compatible and same.to_text().endswith("no changes\n")
    old, new = changed(set_rule("speedSymbol", "values", ["L", "M", "X"]))
    d = diff_templates(old, new)
    kinds = {(c.kind, c.compatible) for c in d.changes}
    assert kinds == {(ChangeKind.REMOVED, False), (ChangeKind.ADDED, True)}
    text = d.to_text()
    assert text.startswith("tyre-batch version 1 -> tyre-batch version 2: 2 changes, 1 incompatible")
    assert "- 2005 speedSymbol.values" in text and "+ 2005 speedSymbol.values" in text
    data = orjson.loads(orjson.dumps(d.to_json()))
    assert data["compatible"] is False and data["new"]["version"] == 2 and len(data["changes"]) == 2


def test_diff_of_different_templates_is_incompatible() -> None:
    d = diff_templates(load("tyre-batch"), load("steel-coil"))
    assert not d.compatible and d.changes[0].attribute == "name"


# -- the shipped templates ------------------------------------------------------------------------------

def test_five_templates_ship() -> None:
    assert [p.stem for p in SHIPPED] == ["chemical-lot", "household-appliance", "machinery-part", "steel-coil",
                                         "tyre-batch"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_template_parses_and_is_labelled_illustrative(path: Path) -> None:
    t = parse_definition_text(path.read_bytes())
    assert t.name == path.stem and t.version == 1
    assert t.description.startswith("Illustrative template")
    assert all(f.label.zh and f.label.en for f in t.fields) and t.label.zh and t.label.en
    assert any("\u4e00" <= c <= "\u9fff" for c in t.label.zh)
    assert len(t.fields) >= 12 and t.required and len(t.to_bytes()) < MAX_DEFINITION_BYTES
    used = {f.type for f in t.fields}
    assert {"string", "integer", "decimal", "date", "enumeration", "url", "reference"} <= used
    assert parse_definition_text(t.to_bytes()) == t


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_generated_values_fit_their_template(path: Path) -> None:
    t = parse_definition_text(path.read_bytes())
    ref = TemplateRef(template_handle("88.100", t.name), t.version)
    seen = set()
    for k in range(200):
        handle = f"88.100.1/SEED{k:09d}"
        values = generate_values(t, handle, seed=3, ref=ref)
        assert validate(t, values) == [], (handle, validate(t, values))
        assert check_values(values) == values and values[0] == ref.to_value()
        assert t.required <= {v.index for v in values}
        seen.add(values)
    assert len(seen) == 200  # every identifier gets its own data


def test_generation_is_deterministic_per_seed_and_identifier() -> None:
    t = load("tyre-batch")
    a = generate_values(t, "88.118.8/X1", seed=1)
    assert generate_values(t, "88.118.8/X1", seed=1) == a
    other_case = generate_values(t, "88.118.8/x1", seed=1)  # identifiers match case-insensitively:
    assert [v.data.lower() for v in other_case] == [v.data.lower() for v in a]  # same draws (URLs keep the case)
    assert generate_values(t, "88.118.8/X1", seed=2) != a
    assert generate_values(t, "88.118.8/X2", seed=1) != a
    assert {v.index for v in generate_values(t, "88.118.8/X1", seed=1, optional_share=1.0)} == set(t.by_index)
    assert {v.index for v in generate_values(t, "88.118.8/X1", seed=1, optional_share=0.0)} == t.required


@FAST
@given(st.integers(0, 2**32), st.text(min_size=1, max_size=30).filter(lambda s: s.isprintable()),
       st.sampled_from(SHIPPED))
def test_generated_values_fit_for_any_seed(seed: int, suffix: str, path: Path) -> None:
    t = parse_definition_text(path.read_bytes())
    assert validate(t, generate_values(t, f"88.118.8/{suffix}", seed=seed)) == []


def test_a_patterned_field_without_examples_cannot_be_generated() -> None:
    t = parse_definition({"name": "x", "version": 1, "label": LABEL, "fields": [
        {"index": 2000, "name": "code", "type": "string", "required": True, "label": LABEL, "pattern": "Q[0-9]{3}"}]})
    with pytest.raises(InvalidValue, match="give it examples"):
        generate_values(t, "88.1/x")


def test_the_demo_identifier_fits_the_tyre_batch_template() -> None:
    # the template fields src/idresolve/cluster/bootstrap.py registers for 88.118.8/JXDY2106023
    demo = (string_value(1, "URL", "https://example.com/products/JXDY2106023"),
            string_value(2, "DESC", "Demo product: a tyre batch registered at start-up by idresolve"),
            string_value(2000, "productName", "Radial tyre 205/55R16"),
            string_value(2001, "batchNumber", "2106023"))
    t = load("tyre-batch")
    check_record(t, demo)
    check_record(t, (*demo, TemplateRef(template_handle("88.118", "tyre-batch"), 1).to_value()))
    full = generate_values(t, "88.118.8/JXDY2106023", seed=0, optional_share=1.0)
    assert len(Record("88.118.8/JXDY2106023", (*demo[:2], *full)).encode()) > 512  # a UDP answer truncates


# -- the micro-benchmark, run as a user runs it ----------------------------------------------------------

def test_the_validation_micro_benchmark_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "idresolve.bench.templates", "--records", "20", "--repeat", "1",
                           "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["template"] for r in rows] == [p.stem for p in SHIPPED]
    for r in rows:
        assert r["records"] == 20 and r["checkValuesUs"] > 0 and r["validateUs"] > 0 and r["compileMs"] > 0
        assert r["valuesPerRecord"] > 10
    table = subprocess.run([sys.executable, "-m", "idresolve.bench.templates", "--records", "5", "--repeat", "1"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert table.returncode == 0 and "both/check" in table.stdout and "tyre-batch" in table.stdout
    (tmp_path / "bad.json").write_text('{"name": "x"}')
    for where in (tmp_path / "missing", tmp_path):
        failed = subprocess.run([sys.executable, "-m", "idresolve.bench.templates", "--templates", str(where)],
                                capture_output=True, text=True, timeout=120, check=False)
        assert failed.returncode == 1 and failed.stderr.startswith("error: ")


def test_the_documented_examples_hold() -> None:
    text = (ROOT / "docs" / "templates.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```json\n")[1:]]
    t = parse_definition_text(blocks[0])  # the complete example of the format
    assert t.name == "tyre-batch" and len(t.fields) == 11
    assert {f.type for f in t.fields} == set(FieldType)
    record = next(json.loads(b) for b in blocks if '"type": "TEMPLATE"' in b)
    values = tuple(value_from_json(v) for v in record["values"])
    assert template_ref_of(values) == TemplateRef("88.118/TPL-tyre-batch", 1)
    check_record(t, values)
    check_record(load("tyre-batch"), values)
