"""Safe defaults: no default passwords, no plain-text writes beyond loopback, secrets kept secret.

- ``idresolve node`` listening beyond loopback refuses to start without a configured admin secret (exit 2,
  a clear message, nothing generated); with a secret but no TLS it refuses plain-HTTP writes (403); with
  TLS (a throwaway self-signed certificate) writes over HTTPS work.
- Generated secrets differ between data directories, are stored with mode 0600 (``admin-secret`` of a
  node; ``cluster-secret`` and ``credentials.json`` of a cluster) and are shown once, never again.
- With ``--log-level DEBUG``, after succeeding and failing authenticated requests (REST Basic auth and
  sessions, binary auth), no secret, right or wrong, appears in stdout, stderr or any answer body.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import pytest

from clusterutil import MINIMAL
from hardenutil import UP_NODES, base_port, basic_auth, start_up
from idresolve.cluster.plan import PORTS_PER_NODE
from idresolve.core.codes import OpCode, ResponseCode
from idresolve.core.messages import Request
from idresolve.core.values import string_value
from idresolve.core.wire import Codec, FrameDecoder, decode_message
from procs import NodeProcess, clean_env, run_cli

SECRET = "defaults-test-secret-0123456789"
WRONG = "wrong-secret-9876543210-zyxw"
IDENTITY = "300:0.NA/88.100"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------------------------------
# Small clients that keep every answer's raw bytes


class Answers:
    """Every answer body seen, to search for secrets afterwards."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def rest(self, port: int, method: str, path: str, *, auth: str | None = None, body: object = None,
             tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
        conn: http.client.HTTPConnection = (http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls)
                                            if tls is not None else http.client.HTTPConnection("127.0.0.1", port,
                                                                                               timeout=10))
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            self.bodies.append(raw)
            self.bodies.append(str(resp.getheaders()).encode())
            return resp.status, raw
        finally:
            conn.close()

    def binary(self, port: int, req: Request) -> tuple[int, str]:
        """(code, message) of one binary request; keeps the raw answer payload."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(Codec().frame(req))
            decoder = FrameDecoder()
            while True:
                data = s.recv(65536)
                assert data, "the node closed the connection without answering"
                payloads = decoder.feed(data)
                if payloads:
                    break
        self.bodies.append(payloads[0])
        resp = decode_message(payloads[0])
        return resp.code, resp.message  # type: ignore[union-attr]

    def find(self, needles: list[str]) -> list[tuple[str, bytes]]:
        return [(n, b[:200]) for b in self.bodies for n in needles if n and n.encode() in b]


def _put(handle: str, text: str) -> dict[str, object]:
    return {"values": [{"index": 1, "type": "URL", "data": text}]}


def _authenticated_traffic(ans: Answers, http_port: int, tcp_port: int | None, identity: str, secret: str,
                           prefix: str, tag: str) -> None:
    """Succeeding and failing authenticated requests over REST (Basic, sessions) and the binary protocol."""
    good, bad = basic_auth(identity, secret), basic_auth(identity, WRONG)
    status, _ = ans.rest(http_port, "PUT", f"/api/handles/{prefix}/{tag}-ok", auth=good, body=_put("x", "https://ok"))
    assert status == 201
    status, _ = ans.rest(http_port, "PUT", f"/api/handles/{prefix}/{tag}-bad", auth=bad, body=_put("x", "https://no"))
    assert status == 401
    # A plain (unencoded) identity with the secret after it; a mangled header holding the secret.
    plain = "Basic " + base64.b64encode(f"{identity}:{WRONG}".encode()).decode()
    assert ans.rest(http_port, "PUT", f"/api/handles/{prefix}/{tag}-bad2", auth=plain, body=_put("x", "y"))[0] == 401
    assert ans.rest(http_port, "GET", f"/api/handles/{prefix}/{tag}-ok", auth=f"Basic {secret}")[0] in (400, 401)
    assert ans.rest(http_port, "GET", f"/api/handles?prefix={prefix}&pageSize=5", auth=good)[0] == 200
    assert ans.rest(http_port, "POST", "/api/sessions", auth=good)[0] == 201
    assert ans.rest(http_port, "POST", "/api/sessions", auth=bad)[0] == 401
    status, raw = ans.rest(http_port, "GET", f"/api/handles/0.NA/{prefix}")  # anonymous: HS_SECKEY is not public
    assert status == 200 and b"HS_SECKEY" not in raw
    if tcp_port is None:
        return
    value = (string_value(1, "URL", "https://binary.example"),)
    code, _ = ans.binary(tcp_port, Request(7, OpCode.CREATE_HANDLE, f"{prefix}/{tag}-bin", values=value,
                                           auth=(identity, secret.encode())))
    assert code == ResponseCode.SUCCESS
    code, msg = ans.binary(tcp_port, Request(8, OpCode.CREATE_HANDLE, f"{prefix}/{tag}-binbad", values=value,
                                             auth=(identity, WRONG.encode())))
    assert code not in (ResponseCode.SUCCESS, ResponseCode.ERROR), (code, msg)
    code, msg = ans.binary(tcp_port, Request(9, OpCode.BATCH_CREATE, "", items=((f"{prefix}/{tag}-b1", value),),
                                             auth=(f"300:0.NA/{prefix}.404", WRONG.encode())))
    assert code not in (ResponseCode.SUCCESS, ResponseCode.ERROR), (code, msg)
    code, _ = ans.binary(tcp_port, Request(10, OpCode.RESOLUTION, f"{prefix}/{tag}-bin", auth=(identity, secret.encode())))
    assert code == ResponseCode.SUCCESS


def _leaks(secrets: list[str], *texts: str) -> list[tuple[str, str]]:
    found = []
    for t in texts:
        for s in secrets:
            if s and s in t:
                i = t.index(s)
                found.append((s[:6] + "...", t[max(0, i - 80):i + 20]))
    return found


# --------------------------------------------------------------------------------------------------
# Beyond loopback: a configured secret, and TLS for writes


@pytest.mark.parametrize("how", ["no secret", "empty flag", "empty env"])
def test_beyond_loopback_without_a_configured_secret_refuses_to_start(tmp_path: Path, how: str) -> None:
    data_dir = tmp_path / "data"
    args = ["node", "--prefix", "88.100", "--http", "0.0.0.0:0", "--data-dir", str(data_dir)]
    env = clean_env()
    if how == "empty flag":
        args += ["--admin-secret", ""]
    elif how == "empty env":
        env["IDRESOLVE_ADMIN_SECRET"] = ""
    res = run_cli(*args, env=env)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "error: listening beyond loopback needs a configured admin secret" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not (data_dir / "admin-secret").exists(), "a secret was generated although the node refused to start"


def test_the_refusal_is_the_only_thing_on_stderr(tmp_path: Path) -> None:
    res = run_cli("node", "--prefix", "88.100", "--http", "0.0.0.0:0", "--data-dir", str(tmp_path / "d"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: listening beyond loopback needs a configured admin secret (--admin-secret or "
        "IDRESOLVE_ADMIN_SECRET); there are no default passwords"], res.stderr


def test_a_binary_listener_beyond_loopback_also_needs_a_configured_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    node = NodeProcess("--prefix", "88.100", "--http", "127.0.0.1:0", "--tcp", "0.0.0.0:0", "--data-dir",
                       str(data_dir), log=tmp_path / "node.log")
    try:
        try:
            node.wait_ready(timeout=20)  # it should refuse to start (exit 2), like the HTTP case
            started = True
        except AssertionError:  # it exited before its ready line
            started = False
        code = node.proc.poll()
    finally:
        node.close()
    assert not started and code == 2, f"the node started: {node.lines[:2]}"
    assert not (data_dir / "admin-secret").exists()


def test_with_a_secret_but_without_tls_plain_http_writes_are_refused(tmp_path: Path) -> None:
    node = NodeProcess("--prefix", "88.100", "--http", "0.0.0.0:0", "--data-dir", str(tmp_path / "data"),
                       "--admin-secret", SECRET, log=tmp_path / "node.log")
    try:
        url = node.wait_ready()
        assert url.startswith("http://0.0.0.0:")
        port = node.port
        ans = Answers()
        good = basic_auth(IDENTITY, SECRET)
        for method, path, body in (("PUT", "/api/handles/88.100/plain", _put("x", "https://plain")),
                                   ("POST", "/api/batch", {"handles": [{"handle": "88.100/plain2", "values": []}]}),
                                   ("DELETE", "/api/handles/0.NA/88.100", None)):
            status, raw = ans.rest(port, method, path, auth=good, body=body)
            assert status == 403, (method, path, status, raw)
            answer = json.loads(raw)
            assert answer["responseCode"] in (400, 401, 403) and "HTTPS" in answer.get("message", ""), answer
        assert ans.rest(port, "GET", "/api/handles/88.100/plain")[0] == 404  # nothing was written
        assert ans.rest(port, "GET", "/api/handles/0.NA/88.100")[0] == 200  # reads are fine
        assert node.stop() == 0
        assert not ans.find([SECRET]) and SECRET not in "\n".join(node.lines) + node.stderr_text()
    finally:
        node.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("no way to make a throwaway certificate: neither the cryptography package nor openssl")
        res = subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                              "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                              "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            pytest.skip(f"openssl could not make a throwaway certificate: {res.stderr.strip()[:300]}")
        return cert, key
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pkey.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(pkey, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(pkey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert, key


def test_with_tls_writes_over_https_work(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    node = NodeProcess("--prefix", "88.100", "--http", "0.0.0.0:0", "--data-dir", str(tmp_path / "data"),
                       "--admin-secret", SECRET, "--tls-cert", str(cert), "--tls-key", str(key),
                       log=tmp_path / "node.log")
    try:
        url = node.wait_ready()
        assert url.startswith("https://0.0.0.0:")
        port = node.port
        tls = ssl.create_default_context(cafile=str(cert))  # verifies the certificate and 127.0.0.1
        ans = Answers()
        status, raw = ans.rest(port, "PUT", "/api/handles/88.100/secure", auth=basic_auth(IDENTITY, SECRET),
                               body=_put("x", "https://secure.example"), tls=tls)
        assert status == 201, raw
        status, raw = ans.rest(port, "GET", "/api/handles/88.100/secure", tls=tls)
        assert status == 200 and json.loads(raw)["values"][0]["data"]["value"] == "https://secure.example"
        status, _ = ans.rest(port, "PUT", "/api/handles/88.100/secure2", auth=basic_auth(IDENTITY, WRONG),
                             body=_put("x", "y"), tls=tls)
        assert status == 401
        # Plain HTTP on the TLS port is no way around it: refused at the connection or with an error status.
        try:
            plain_status: int | None = ans.rest(port, "PUT", "/api/handles/88.100/plain",
                                                auth=basic_auth(IDENTITY, SECRET), body=_put("x", "y"))[0]
        except (http.client.HTTPException, OSError):
            plain_status = None
        assert plain_status is None or plain_status >= 400, plain_status
        assert ans.rest(port, "GET", "/api/handles/88.100/plain", tls=tls)[0] == 404
        assert node.stop() == 0
        assert not ans.find([SECRET, WRONG])
    finally:
        node.close()


# --------------------------------------------------------------------------------------------------
# Generated secrets, and secrets in logs and answers: one node


SHOWN = re.compile(r"generated admin secret \(shown once\): (\S+)")


def test_node_secrets_are_generated_private_shown_once_and_never_logged_or_answered(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ans = Answers()
    outputs: list[str] = []
    secrets: list[str] = []
    for run, data_dir in enumerate((a, a, b)):
        node = NodeProcess("--prefix", "88.100", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--data-dir",
                           str(data_dir), "--log-level", "DEBUG", "--access-log", log=tmp_path / f"node{run}.log")
        try:
            node.wait_ready()
            tcp = int(node.wait_for(r"binary protocol: tcp [\d.]+:(\d+)").group(1))
            node.wait_for(r"admin secret file: ")
            secret_file = data_dir / "admin-secret"
            secret = secret_file.read_text().strip()
            assert _mode(secret_file) == 0o600, oct(_mode(secret_file))
            assert len(secret) >= 24
            _authenticated_traffic(ans, node.port, tcp, IDENTITY, secret, "88.100", f"run{run}")
            assert node.stop() == 0
            node._reader.join(timeout=10)
            out, err = "\n".join(node.lines), node.stderr_text()
        finally:
            node.close()
        assert "DEBUG" in err or "INFO" in err, "the node logged nothing at DEBUG level: the check would be empty"
        shown = SHOWN.findall(out)
        if run in (0, 2):  # first start in this data directory: shown once, on stdout
            assert shown == [secret], shown
            assert out.count(secret) == 1 and secret not in err
        else:  # the second start: never again
            assert shown == [] and secret not in out + err
            assert secret == secrets[0], "the secret changed between starts"
        secrets.append(secret)
        outputs.append(out.replace(f"generated admin secret (shown once): {secret}", "") + err)
    assert secrets[0] != secrets[2], "two data directories got the same generated secret"
    leaks = _leaks([*set(secrets), WRONG], *outputs)
    assert not leaks, f"secrets in the node's output: {leaks}"
    assert not ans.find([*set(secrets), WRONG]), "secrets in answers"


# --------------------------------------------------------------------------------------------------
# A small cluster (`idresolve up`)

def test_cluster_secrets_are_private_differ_and_never_logged_or_answered(tmp_path: Path) -> None:
    from idresolve.cluster.credentials import read_credentials
    from idresolve.cluster.plan import identity_of, make_plan
    from idresolve.core.topology import load_topology

    c1, c2 = tmp_path / "c1", tmp_path / "c2"
    port = base_port(PORTS_PER_NODE * UP_NODES)
    plan = make_plan(load_topology(MINIMAL), base_port=port, workers=1)
    sec, ent = plan.node("sec-tyre-qingdao"), plan.node("ent-tyre-qingdao-8")
    ans = Answers()
    texts: list[str] = []
    masters: list[str] = []
    creds: dict[str, str] = {}
    for run in range(2):  # first and second start on the same data directory
        up = start_up(c1, port, "--workers", "1", "--log-level", "DEBUG")
        proc = up.proc
        try:
            master = (c1 / "cluster-secret").read_text().strip()
            creds = read_credentials(c1)
            for name in ("cluster-secret", "credentials.json"):
                assert _mode(c1 / name) == 0o600, (name, oct(_mode(c1 / name)))
            hosted, own = identity_of("88.118.9"), identity_of("88.118.8")
            _authenticated_traffic(ans, sec.http_port, sec.tcp_port, hosted, creds[hosted], "88.118.9", f"s{run}")
            _authenticated_traffic(ans, ent.http_port, ent.tcp_port, own, creds[own], "88.118.8", f"e{run}")
            code, _ = up.interrupt()
        finally:
            up.ensure_gone()
        assert code == 0, proc.stderr[-2000:]
        texts += [proc.stdout, proc.stderr]
        masters.append(master)
    assert masters[0] == masters[1]
    up = start_up(c2, port, "--workers", "1", "--log-level", "DEBUG")
    try:
        other = (c2 / "cluster-secret").read_text().strip()
        other_creds = read_credentials(c2)
        assert up.interrupt()[0] == 0
    finally:
        up.ensure_gone()
    texts += [up.proc.stdout, up.proc.stderr]
    assert other != masters[0], "two data directories got the same cluster secret"
    assert not set(other_creds.values()) & set(creds.values())
    assert len(set(creds.values())) == len(creds), "two identities share a secret"
    every = [masters[0], other, *creds.values(), *other_creds.values(), WRONG]
    leaks = _leaks(every, *texts)
    assert not leaks, f"secrets in `idresolve up` output: {leaks}"
    assert not ans.find(every), "secrets in answers"


def test_binary_writes_beyond_loopback_are_refused_like_plain_http_writes(tmp_path: Path) -> None:
    node = NodeProcess("--prefix", "88.100", "--http", "0.0.0.0:0", "--tcp", "0.0.0.0:0", "--data-dir",
                       str(tmp_path / "data"), "--admin-secret", SECRET, log=tmp_path / "node.log")
    try:
        node.wait_ready()
        tcp = int(node.wait_for(r"binary protocol: tcp [\d.]+:(\d+)").group(1))
        ans = Answers()
        status, _ = ans.rest(node.port, "PUT", "/api/handles/88.100/over-http", auth=basic_auth(IDENTITY, SECRET),
                             body=_put("x", "https://plain"))
        assert status == 403  # the REST surface refuses the plain-text write ...
        code, msg = ans.binary(tcp, Request(1, OpCode.CREATE_HANDLE, "88.100/over-binary",
                                            values=(string_value(1, "URL", "https://plain"),),
                                            auth=(IDENTITY, SECRET.encode())))
        assert code != ResponseCode.SUCCESS, "... the binary surface of the same node takes it"  # expected: refused
    finally:
        node.close()


def test_no_answer_carries_another_identitys_secret(tmp_path: Path) -> None:
    from hardenutil import start_split_cluster
    from idresolve.cluster.credentials import secret_for
    from idresolve.net.blocking import BlockingClient

    cluster = start_split_cluster(tmp_path / "cluster", [])
    try:
        sec = cluster.node("sec-tyre-qingdao")
        enterprise_secret = secret_for(cluster.master, "88.118.8")
        ans = Answers()
        with BlockingClient(sec.dial_host, sec.tcp_port, timeout_s=10) as c:
            assert c.resolve("0.NA/88.118.8").code == ResponseCode.SUCCESS  # the record is there
        code, _ = ans.binary(sec.tcp_port, Request(1, OpCode.RESOLUTION, "0.NA/88.118.8",
                                                   auth=("300:0.NA/88.118", secret_for(cluster.master, "88.118").encode())))
        assert code == ResponseCode.SUCCESS
        status, _ = ans.rest(sec.http_port, "GET", "/api/handles/0.NA/88.118.8",
                             auth=basic_auth("300:0.NA/88.118", secret_for(cluster.master, "88.118")))
        assert status == 200
        assert not ans.find([enterprise_secret]), "the enterprise admin's secret is in the secondary admin's answer"
    finally:
        cluster.ensure_gone()
