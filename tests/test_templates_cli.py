"""The ``idresolve template`` commands and ``register --template``, run as a user would: subprocesses
against two standalone nodes, a "secondary" publishing a template and an "enterprise" that fetches it
over the binary protocol (``--template-resolver``), as the README shows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procs import NodeProcess, clean_env, run_cli

ROOT = Path(__file__).resolve().parent.parent
TYRE = ROOT / "config" / "templates" / "tyre-batch.json"
TPL = "88.118/TPL-tyre-batch"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tpl-cli")
    sec = NodeProcess("--name", "sec", "--prefix", "88.118", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0",
                      "--data-dir", str(tmp / "sec"), "--admin-secret", "sec-secret", log=tmp / "sec.log")
    ent = None
    try:
        sec_url = sec.wait_ready()
        tcp = sec.wait_for(r"binary protocol: tcp (\S+?),?$").group(1).rstrip(",")
        ent = NodeProcess("--name", "ent", "--prefix", "88.118.8", "--http", "127.0.0.1:0", "--data-dir", str(tmp / "ent"),
                          "--admin-secret", "ent-secret", "--template-resolver", tcp, log=tmp / "ent.log")
        ent_url = ent.wait_ready()
        yield {"sec": sec_url, "ent": ent_url, "tmp": tmp}
    finally:
        for n in (ent, sec):
            if n is not None:
                n.stop()
                n.close()


def cli(*args: str) -> Any:
    return run_cli(*args, env=clean_env(IDRESOLVE_DATA_DIR="/nonexistent-no-cluster"))


def test_create_show_list_register_diff_uses(nodes: dict[str, Any]) -> None:
    sec = ("--server", nodes["sec"], "--secret", "sec-secret")
    ent = ("--server", nodes["ent"], "--secret", "ent-secret")

    out = cli("template", "create", str(TYRE), "--prefix", "88.118", *sec)
    assert out.returncode == 0 and f"created {TPL} with tyre-batch version 1" in out.stdout, out
    again = cli("template", "create", str(TYRE), "--prefix", "88.118", *sec)
    assert again.returncode == 0 and "unchanged" in again.stdout

    shown = cli("template", "show", TPL, "--server", nodes["sec"])
    assert shown.returncode == 0, shown
    assert "轮胎生产批次 / Tyre production batch" in shown.stdout
    assert re.search(r"2001\s+batchNumber\s+string\s+yes\s+生产批号 / Batch number\s+pattern \[0-9\]\{7\}", shown.stdout)
    listed = cli("template", "list", "88.118", "--server", nodes["sec"], "--json")
    assert [t["handle"] for t in json.loads(listed.stdout)["templates"]] == [TPL]

    reg = cli("register", "88.118.8/TYRE-1", "--url", "https://example.com/tyres/1", "--template", TPL,
              "--template-server", nodes["sec"], "--field", "productName=Radial tyre 205/55R16",
              "--field", "batchNumber=2106023", "--field", "loadIndex=91", *ent)
    assert reg.returncode == 0 and "created 88.118.8/TYRE-1" in reg.stdout, reg
    bad = cli("register", "88.118.8/TYRE-2", "--template", TPL, "--template-server", nodes["sec"],
              "--field", "batchNumber=21-06", "--field", "speedSymbol=X", *ent)
    assert bad.returncode == 1
    assert "response code 202" in bad.stderr and "productName (2000): required field missing" in bad.stderr
    assert "batchNumber (2001): does not match the pattern [0-9]{7}" in bad.stderr
    assert "speedSymbol (2005): not one of the allowed values" in bad.stderr
    unknown = cli("register", "88.118.8/TYRE-3", "--template", TPL, "--template-server", nodes["sec"],
                  "--field", "colour=red", *ent)
    assert unknown.returncode == 2 and "has the fields productName, batchNumber" in unknown.stderr

    resolved = cli("resolve", "88.118.8/TYRE-1", "--server", nodes["ent"])
    assert resolved.returncode == 0 and re.search(r"1001\s+TEMPLATE\s+\d+\s+88.118/TPL-tyre-batch@1", resolved.stdout)
    assert re.search(r"2004\s+loadIndex\s+\d+\s+91", resolved.stdout)

    v2 = json.loads(TYRE.read_text(encoding="utf-8"))
    v2["version"] = 2
    v2["fields"] = [dict(f, required=True) if f["name"] == "productionDate" else f for f in v2["fields"]]
    path = nodes["tmp"] / "tyre-batch-v2.json"
    path.write_text(json.dumps(v2, ensure_ascii=False), encoding="utf-8")
    added = cli("template", "create", str(path), "--prefix", "88.118", *sec)
    assert added.returncode == 0 and "added tyre-batch version 2" in added.stdout
    assert "~ 2008 productionDate.required: false -> true  [incompatible" in added.stdout
    diff = cli("template", "diff", TPL, "1", "2", "--server", nodes["sec"])
    assert diff.returncode == 0 and "1 incompatible" in diff.stdout
    # The record made with version 1 is untouched; a new one against the latest needs the new field.
    latest = cli("register", "88.118.8/TYRE-4", "--template", TPL, "--template-server", nodes["sec"],
                 "--field", "productName=p", "--field", "batchNumber=2106024", *ent)
    assert latest.returncode == 1 and "tyre-batch version 2" in latest.stderr and "productionDate (2008)" in latest.stderr

    uses = cli("template", "uses", TPL, "--prefix", "88.118.8", *ent, "--json")
    assert uses.returncode == 0, uses
    assert json.loads(uses.stdout)["handles"] == [{"handle": "88.118.8/TYRE-1", "version": 1}]


def test_a_bad_definition_file_is_refused_before_anything_is_sent(nodes: dict[str, Any]) -> None:
    bad = nodes["tmp"] / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "version": 1, "label": {"zh": "坏", "en": "Bad"},
                               "fields": [{"index": 2000, "name": "x", "type": "strin", "requred": True,
                                           "label": {"zh": "x", "en": "x"}}]}), encoding="utf-8")
    out = cli("template", "create", str(bad), "--prefix", "88.118", "--server", "http://127.0.0.1:9", "--secret", "s")
    assert out.returncode == 1
    assert "unknown key 'requred' (did you mean 'required'?)" in out.stderr


def test_show_a_template_that_does_not_exist(nodes: dict[str, Any]) -> None:
    out = cli("template", "show", "88.118/TPL-nothing", "--server", nodes["sec"])
    assert out.returncode == 1 and "does not exist" in out.stderr
