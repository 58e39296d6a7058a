"""The command line as a user runs it: ``idresolve ...`` subprocesses against a real node subprocess.

Exit codes: 0 success, 1 the node answered with an error, 2 usage or configuration error, 3 unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from idresolve.cli.main import build_parser, main
from procs import IDRESOLVE, NodeProcess, clean_env, run_cli

SECRET_LINE = re.compile(r"generated admin secret \(shown once\): (\S+)")


def subcommands() -> list[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("idresolve has no subcommands")


def test_the_command_table_names_every_command_of_every_module_in_the_order_of_help() -> None:
    from idresolve.cli.main import COMMAND_MODULES, add_commands

    listed = []
    for module, names in COMMAND_MODULES.items():
        sub = argparse.ArgumentParser().add_subparsers()
        add_commands(sub, module)
        assert tuple(sub.choices) == names, module
        listed += names
    assert sorted(listed) == subcommands() and len(set(listed)) == len(listed)
    for names in COMMAND_MODULES.values():  # a command's parser holds its module's commands only
        for name in names:
            sub = next(a for a in build_parser(name)._actions if isinstance(a, argparse._SubParsersAction))
            assert tuple(sub.choices) == names


def test_a_client_command_imports_only_its_own_module() -> None:
    """``idresolve resolve`` does not pay for aiohttp (the dashboard's), the simulator or the benchmarks;
    ``idresolve --help`` builds every command's parser."""
    code = ("import sys, contextlib, io\n"
            "from idresolve.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try: main([*sys.argv[1:], '--help'])\n"
            "    except SystemExit: pass\n"
            "print(sorted(m for m in ('aiohttp', 'idresolve.sim.engine', 'idresolve.bench.runner', "
            "'idresolve.cli.dashboard_cmd') if m in sys.modules), 'COMMAND' in out.getvalue())")
    for argv, loaded in ((["resolve"], "[] False"), (["register"], "[] False"),
                         ([], "['aiohttp', 'idresolve.cli.dashboard_cmd'] True")):
        res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=clean_env(),
                             timeout=60)
        assert res.returncode == 0 and res.stdout.strip() == loaded, (argv, res.stdout, res.stderr)


def run_parallel(*argvs: list[str], timeout: float = 30.0) -> list[subprocess.CompletedProcess[str]]:
    """Run independent CLI invocations at once (each start of the interpreter and its imports costs 0.2-0.5 s)."""
    procs = [subprocess.Popen([*IDRESOLVE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=clean_env()) for argv in argvs]
    results = []
    for argv, p in zip(argvs, procs, strict=True):
        out, err = p.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess([*IDRESOLVE, *argv], p.returncode, out, err))
    return results


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, Path]]:
    """A node with a generated secret, serving 88.100 and 88.200."""
    data = tmp_path_factory.mktemp("cli-node")
    n = NodeProcess("--prefix", "88.100", "--prefix", "88.200", "--http", "127.0.0.1:0", "--data-dir",
                    str(data / "d"), "--name", "cli", log=data / "node.log")
    try:
        n.wait_ready()
        yield n, data / "d" / "admin-secret"
    finally:
        n.close()


def test_help_for_every_command() -> None:
    names = subcommands()
    assert {"node", "register", "resolve", "delete", "list"} <= set(names)
    results = run_parallel(["--help"], *[[name, "--help"] for name in names], ["--version"], [], ["frobnicate"])
    *helps, version, bare, unknown = results
    for r, name in zip(helps, ["(top)", *names], strict=True):
        assert r.returncode == 0, (name, r.stderr)
        assert "usage: idresolve" in r.stdout, name
    for name in names:
        assert name in helps[0].stdout
    assert version.returncode == 0 and re.search(r"idresolve \d+\.\d+", version.stdout)
    assert bare.returncode == 2 and "usage:" in bare.stdout + bare.stderr
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_node_generated_secret_is_shown_once_and_kept_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ("--prefix", "88.100", "--http", "127.0.0.1:0", "--data-dir", str(data))
    first = NodeProcess(*args, log=tmp_path / "first.log")
    try:
        url = first.wait_ready()
        assert url.startswith("http://127.0.0.1:")
        secret = first.wait_for(SECRET_LINE).group(1)
        first.wait_for(r"admin secret file: .*admin-secret")
        secret_file = data / "admin-secret"
        assert secret_file.read_text().strip() == secret
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert first.stop() == 0
        first.wait_for(r"^stopped$", timeout=10)
    finally:
        first.close()
    assert secret not in first.stderr_text()  # logs never carry the secret

    second = NodeProcess(*args, log=tmp_path / "second.log")
    try:
        url = second.wait_ready()
        second.wait_for(r"Ctrl-C stops")  # the last line of the banner
        assert not any("generated admin secret" in line or secret in line for line in second.lines)
        assert any("admin secret file:" in line for line in second.lines)
        assert (data / "admin-secret").read_text().strip() == secret  # not regenerated
        r = run_cli("register", "88.100/again", "--url", "https://e.com", "--server", url,
                    "--secret-file", str(data / "admin-secret"))
        assert r.returncode == 0, r.stderr
        assert second.stop() == 0
        second.wait_for(r"^stopped$", timeout=10)
    finally:
        second.close()


def test_register_resolve_list_delete(node: tuple[NodeProcess, Path]) -> None:
    n, secret_file = node
    common = ["--server", n.url or "", "--secret-file", str(secret_file)]

    r = run_cli("register", "88.100/Pump-7", "--url", "https://example.com/pump7", "--value", "2:EMAIL=ops@e.com",
                *common)
    assert (r.returncode, r.stdout.strip()) == (0, "created 88.100/Pump-7"), r.stderr

    r = run_cli("register", "88.100/Pump-7", "--index", "3", "--value", "3:DESC=pump", "--json", *common)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"responseCode": 1, "handle": "88.100/Pump-7"}

    r = run_cli("resolve", "88.100/pump-7", "--server", n.url or "")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "88.100/pump-7"
    assert "https://example.com/pump7" in r.stdout and "ops@e.com" in r.stdout and "EMAIL" in r.stdout

    r = run_cli("resolve", "88.100/PUMP-7", "--type", "EMAIL", "--json", "--server", n.url or "")
    body = json.loads(r.stdout)
    assert r.returncode == 0 and body["handle"] == "88.100/PUMP-7"
    assert [(v["index"], v["data"]["value"]) for v in body["values"]] == [(2, "ops@e.com")]

    r = run_cli("list", "88.100", "--json", *common)
    body = json.loads(r.stdout)
    assert r.returncode == 0 and body["totalCount"] == str(len(body["handles"]))
    assert "88.100/Pump-7" in body["handles"]
    r = run_cli("delete", "88.100/pump-7", "--json", *common)
    assert r.returncode == 0 and json.loads(r.stdout)["responseCode"] == 1, r.stderr
    r = run_cli("resolve", "88.100/Pump-7", "--server", n.url or "")
    assert r.returncode == 1 and "handle not found" in r.stderr


def test_batch_registration_from_a_file(node: tuple[NodeProcess, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    n, secret_file = node
    lines = [json.dumps({"handle": f"88.200/lot-{i}", "values": [{"index": 1, "type": "URL", "data": f"u{i}"}]})
             for i in range(30)]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    common = ["--server", n.url or "", "--secret-file", str(secret_file)]
    r = run_cli("register", "--batch", str(batch), "--json", *common)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"registered": 30, "total": 30, "failedChunks": 0}
    # The same batch again without overwriting: refused as a whole (the identifiers exist), exit 1.
    code, _, err = run_main(["register", "--batch", str(batch), "--no-overwrite", *common], capsys)
    assert code == 1 and "refused" in err and "88.200/lot-0: code 101" in err
    code, out, _ = run_main(["resolve", "88.200/lot-29", "--server", n.url or "", "--json"], capsys)
    assert code == 0 and json.loads(out)["values"][0]["data"]["value"] == "u29"


def test_errors_and_exit_codes(node: tuple[NodeProcess, Path], tmp_path: Path) -> None:
    n, secret_file = node
    url = n.url or ""
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret\n")
    cases = [
        # (argv, exit code, text expected on stderr)
        (["resolve", "88.100/does-not-exist", "--server", url], 1, "error: HTTP 404, response code 100: handle not found"),
        (["resolve", "88.100/x", "--server", f"http://127.0.0.1:{closed_port()}"], 3, "cannot reach"),
        (["resolve", "88.100/x", "--index", "one"], 2, "invalid int value"),
        (["node", "--http", "127.0.0.1:0", "--data-dir", str(tmp_path / "np")], 2,
         "error: a node needs at least one prefix"),
        (["register", "88.100/x", "--url", "u", "--server", url, "--secret-file", str(wrong)], 1,
         "authentication failed"),
    ]
    results = run_parallel(*[argv for argv, _, _ in cases])
    for (argv, code, text), r in zip(cases, results, strict=True):
        assert r.returncode == code, (argv, r.returncode, r.stdout, r.stderr)
        assert text in r.stderr, (argv, r.stderr)
        assert "Traceback" not in r.stderr, (argv, r.stderr)
    assert not (tmp_path / "np").exists() or not any((tmp_path / "np").iterdir())


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this process: the same code as the script without an interpreter start each time."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_more_errors_in_process(node: tuple[NodeProcess, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("IDRESOLVE_")]:
        monkeypatch.delenv(name)
    n, secret_file = node
    url = n.url or ""
    wrong = tmp_path / "wrong-secret"
    wrong.write_text("not-the-secret\n")
    auth = ["--server", url, "--secret-file", str(secret_file)]
    cases = [
        (["resolve", "88.999/x", "--server", url], 1, "doesn't live here"),
        (["resolve", "88.100/x", "--server", "ftp://nowhere"], 2, "bad server URL"),
        (["resolve"], 2, "required: handle"),
        (["list", "88.100", "--page", "x"], 2, "invalid int value"),
        (["node", "--store", "lmdb", "--prefix", "88.1"], 2, "invalid choice"),
        (["register", "88.100/x", "--url", "u", "--server", url], 2, "needs credentials"),
        (["register", "88.100/x", *auth], 2, "nothing to register"),
        (["register", "--batch", str(tmp_path / "none.json"), *auth], 2, "cannot read batch file"),
        (["register", "88.100/x", "--value", "novalue", *auth], 2, "bad --value"),
        (["register", "88.100/x", "--values-json", str(tmp_path / "none.json"), *auth], 2, "cannot read values"),
        (["register", "88.100/x", "--url", "u", "--server", url, "--secret-file", str(tmp_path / "missing")], 2,
         "cannot read secret file"),
        (["register", "88.200/x", "--url", "u", "--server", url, "--secret-file", str(secret_file),
          "--identity", "300:0.NA/88.100"], 1, "may not"),
        (["delete", "88.100/does-not-exist", *auth], 1, "handle not found"),
        (["delete", "88.100/does-not-exist", "--index", "2", *auth], 1, "handle not found"),
        (["list", "88.100", "--server", url, "--secret-file", str(wrong)], 1, "authentication failed"),
        (["list", "88.999", *auth], 1, "authentication failed"),  # the default identity 300:0.NA/88.999 is unknown
        (["list", "88.999", "--identity", "300:0.NA/88.100", *auth], 1, "doesn't live here"),
    ]
    for argv, code, text in cases:
        got, _out, err = run_main(argv, capsys)
        assert (got, text in err) == (code, True), (argv, got, err)
    # The same commands that succeed, for contrast.
    assert run_main(["register", "88.100/inproc", "--value", "1:URL=u", "--value", "DESC=d", *auth], capsys)[0] == 0
    assert run_main(["delete", "88.100/inproc", "--index", "2", *auth], capsys)[0] == 0
    code, out, _ = run_main(["list", "0.NA/88.100", "--page", "0", "--page-size", "0", *auth], capsys)
    assert code == 0 and re.search(r"\(\d+ in all under 88\.100\)", out), out
    code, out, _ = run_main(["resolve", "88.100/inproc", "--server", url, "--json"], capsys)
    assert code == 0 and [v["index"] for v in json.loads(out)["values"]] == [1, 100]


def test_server_and_secret_from_the_environment(node: tuple[NodeProcess, Path]) -> None:
    n, secret_file = node
    env = clean_env(IDRESOLVE_SERVER=n.url or "", IDRESOLVE_SECRET_FILE=str(secret_file))
    r = run_cli("register", "88.100/env", "--url", "https://e.com/env", env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("resolve", "88.100/env", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["values"][0]["data"]["value"] == "https://e.com/env"


def test_register_twice_then_delete(node: tuple[NodeProcess, Path], capsys: pytest.CaptureFixture[str]) -> None:
    n, secret_file = node
    common = ["--server", n.url or "", "--secret-file", str(secret_file)]
    assert run_main(["register", "88.100/twice", "--url", "https://e.com/1", *common], capsys)[0] == 0
    assert run_main(["register", "88.100/twice", "--url", "https://e.com/2", *common], capsys)[0] == 0
    code, _, err = run_main(["delete", "88.100/twice", *common], capsys)
    assert code == 0, err
