"""Metadata templates (元数据模板): industry field sets for identifier data, pure and I/O-free.

``docs/templates.md`` describes the format and the rules. The modules:

- ``definition``: the hand-written JSON definition, parsed strictly and within bounds into a ``Template``;
- ``fields``: field types, their lexical forms, the checker each field compiles to;
- ``patterns``: authors' patterns, compiled with RE2 (linear-time matching);
- ``storage``: a template as an identifier (one value per version) and the reference at index 1001;
- ``validate``: a record's values against one template version;
- ``diff``: what changed between two versions, and what is incompatible;
- ``generate``: filled field values for seeding, deterministic per seed and identifier.

What a write path does with a record's values::

    ref = template_ref_of(values)          # None: the record names no template
    if ref is not None:
        template = <the version ref names, fetched and cached by ref.key>
        check_record(template, values)     # TemplateViolation (code 202) naming every failing field
"""

from .definition import (
    MAX_DEFINITION_BYTES,
    MAX_FIELDS,
    MAX_SOURCE_BYTES,
    MAX_TEMPLATE_VERSIONS,
    Template,
    parse_definition,
    parse_definition_text,
)
from .diff import Change, ChangeKind, TemplateDiff, diff_templates
from .fields import EnumValue, Field, FieldType, Label
from .generate import generate_values
from .patterns import Pattern, compile_pattern
from .storage import (
    TEMPLATE_DEFINITION_TYPE,
    TEMPLATE_REF_TYPE,
    TEMPLATE_VERSION_BASE_INDEX,
    TemplateRef,
    check_template_record_change,
    is_template_record,
    new_version_value,
    stored_versions,
    template_from_values,
    template_handle,
    template_ref_of,
    version_index,
    version_value,
)
from .validate import FieldProblem, TemplateViolation, check_record, validate

__all__ = [
    "MAX_DEFINITION_BYTES", "MAX_FIELDS", "MAX_SOURCE_BYTES", "MAX_TEMPLATE_VERSIONS",
    "TEMPLATE_DEFINITION_TYPE", "TEMPLATE_REF_TYPE", "TEMPLATE_VERSION_BASE_INDEX",
    "Change", "ChangeKind", "EnumValue", "Field", "FieldProblem", "FieldType", "Label", "Pattern", "Template",
    "TemplateDiff", "TemplateRef", "TemplateViolation",
    "check_record", "check_template_record_change", "compile_pattern", "diff_templates", "generate_values",
    "is_template_record", "new_version_value", "parse_definition", "parse_definition_text", "stored_versions",
    "template_from_values", "template_handle", "template_ref_of", "validate", "version_index", "version_value",
]
