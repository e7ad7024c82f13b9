"""TLS everywhere: clients to the proxy, the proxy to each cluster, against the `tls` bed
whose two clusters accept TLS only (the bed's own CA; its node certificate is valid for every
bed address, 127.0.0.1 included, so the proxy uses it as its own too). The bed's source
requires a login and its target none: the proxy relays the client's login to the source
only. The bed's target requires a client certificate signed by its CA (mutual TLS): the proxy
presents the node certificate. Logins that differ on each side use the `auth` bed's target."""

import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable

import bed
import workload
from proxy import free_port
from test_topology import DC_MAP, driver_commands, run_workload  # noqa: F401 - a fixture

ROWS = 300
RUNTIME_TLS = bed.REPO / "runtime" / "tests" / "tls"


def material(the_bed):
    """The bed's CA, and its node certificate and key (valid for 127.0.0.1 too)."""
    ca = Path(the_bed.source.tls_ca)
    assert ca.exists(), f"the bed has no CA at {ca}: it was not started with --tls both"
    return ca, ca.parent / "node.pem", ca.parent / "node.key"


def cluster_tls(the_bed):
    """TLS to both clusters, checked against the bed's CA, with the client certificate the
    bed's target requires."""
    ca = material(the_bed)[0]
    target = the_bed.target
    assert target.tls_cert, "the tls bed's target must require client certificates"
    return ["--source-tls-ca", str(ca), "--target-tls-ca", str(ca),
            "--target-tls-cert", target.tls_cert, "--target-tls-key", target.tls_key]


def tls_options(the_bed, *, clients=True, client_ca=False):
    ca, cert, key = material(the_bed)
    options = cluster_tls(the_bed)
    if clients:
        options += ["--proxy-pem-certfile", str(cert), "--proxy-pem-keyfile", str(key)]
    if client_ca:
        options += ["--proxy-client-ca", str(ca)]
    return options


def login_cluster(the_bed, hosts, **kwargs):
    """A driver cluster for the proxy with the login of the bed's source, which requires one
    (the proxy relays it; the target requires none)."""
    source = the_bed.source
    assert source.username, "the tls bed must have auth on the source"
    return Cluster(hosts, auth_provider=PlainTextAuthProvider(source.username, source.password),
                   **kwargs)


def tls_session(the_bed, proxy, ca, client_cert=None):
    context = ssl.create_default_context(cafile=str(ca))
    if client_cert:
        context.load_cert_chain(*client_cert)
    cluster = login_cluster(the_bed, [proxy.host], port=proxy.port, ssl_context=context,
                            connect_timeout=15)
    return cluster, cluster.connect()


def another_ca(tmp_path):
    """A CA of its own, which signed nothing the bed uses."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
                    "-subj", "/CN=some other CA", "-keyout", str(tmp_path / "other.key"),
                    "-out", str(tmp_path / "other.pem")], check=True, capture_output=True)
    return tmp_path / "other.pem"


def write_through(session, keyspace, rows=50):
    session.execute(workload.KEYSPACE_DDL.format(ks=keyspace))
    session.execute(f"CREATE TABLE {keyspace}.t (k int PRIMARY KEY, v text)")
    insert = session.prepare(f"INSERT INTO {keyspace}.t (k, v) VALUES (?, ?)")
    for k in range(rows):
        session.execute(insert, (k, f"v{k}"))


def write_through_proxy(the_bed, proxy, keyspace, rows):
    """`write_through` with a driver logged in as the bed's source requires, over plaintext."""
    cluster = login_cluster(the_bed, [proxy.host], port=proxy.port, connect_timeout=15)
    try:
        write_through(cluster.connect(), keyspace, rows=rows)
    finally:
        cluster.shutdown()


def workload_rows(endpoint, keyspace):
    """The rows of the driver workload's table on one cluster (one node: consistency ONE)."""
    cluster = endpoint.cluster()
    try:
        rows = cluster.connect().execute(f"SELECT p, c, v FROM {keyspace}.kv", timeout=60)
        return {(r.p, r.c, r.v) for r in rows}
    finally:
        cluster.shutdown()


def count_on(endpoint, keyspace):
    cluster = endpoint.cluster()
    try:
        return cluster.connect().execute(f"SELECT COUNT(*) FROM {keyspace}.t").one()[0]
    finally:
        cluster.shutdown()


def test_tls_everywhere(tls_bed, start_proxy, driver_commands, keyspace):  # noqa: F811
    """Clients speak TLS to the proxy, the proxy TLS to both clusters (certificates checked
    against the bed's CA and each node's address): the Python driver, cqlsh --ssl and the
    Node.js driver write through it, and both clusters hold the same rows."""
    proxy = start_proxy(tls_bed, *tls_options(tls_bed), *DC_MAP)
    ca, _, _ = material(tls_bed)
    cluster, session = tls_session(tls_bed, proxy, ca)
    try:
        write_through(session, keyspace)
    finally:
        cluster.shutdown()
    assert count_on(tls_bed.source, keyspace) == 50
    assert count_on(tls_bed.target, keyspace) == 50

    endpoint = bed.Endpoint(host=proxy.host, port=proxy.port, dc="", tls_ca=str(ca),
                            username=tls_bed.source.username, password=tls_bed.source.password)
    run = endpoint.cqlsh("-e", f"INSERT INTO {keyspace}.t (k, v) VALUES (1000, 'cqlsh'); "
                               f"SELECT v FROM {keyspace}.t WHERE k = 1000;")
    assert run.returncode == 0 and "cqlsh" in run.stdout, run.stderr + run.stdout
    assert count_on(tls_bed.target, keyspace) == 51

    node_ks = keyspace + "_node"
    result, _ = run_workload(driver_commands["node"], [proxy.address], node_ks, rows=ROWS,
                             env={"CQLMIRROR_TLS_CA": str(ca),
                                  "CQLMIRROR_USERNAME": tls_bed.source.username,
                                  "CQLMIRROR_PASSWORD": tls_bed.source.password})
    assert result["errors"] == [], result
    assert result["written"] == ROWS + 100, result
    source = workload_rows(tls_bed.source, node_ks)
    assert len(source) == ROWS + 100
    assert source == workload_rows(tls_bed.target, node_ks)
    assert "clients TLS, source TLS, target TLS" in proxy.log_text()


def test_client_certificates(tls_bed, start_proxy, keyspace):
    """With --proxy-client-ca, a client without a certificate is refused and one with a
    certificate the CA signed is served (mutual TLS); a plaintext client is refused too."""
    proxy = start_proxy(tls_bed, *tls_options(tls_bed, client_ca=True))
    ca, cert, key = material(tls_bed)
    cluster = login_cluster(tls_bed, [proxy.host], port=proxy.port, connect_timeout=10,
                      ssl_context=ssl.create_default_context(cafile=str(ca)))
    with pytest.raises(NoHostAvailable):
        cluster.connect()
    cluster.shutdown()
    plain = login_cluster(tls_bed, [proxy.host], port=proxy.port, connect_timeout=10)
    with pytest.raises(NoHostAvailable):
        plain.connect()
    plain.shutdown()
    cluster, session = tls_session(tls_bed, proxy, ca, client_cert=(str(cert), str(key)))
    try:
        write_through(session, keyspace, rows=5)
    finally:
        cluster.shutdown()
    assert count_on(tls_bed.target, keyspace) == 5
    assert "TLS handshake failed" in proxy.log_text()


@pytest.mark.parametrize("problem", ["unknown-ca", "wrong-name"])
def test_target_certificate_refused(tls_bed, start_proxy, keyspace, tmp_path, problem):
    """A target whose certificate does not check out (signed by another CA, or not valid for
    the name asked for) is not used: clients still work against the source, and the proxy
    says once which cluster, which address and why. --target-tls-insecure connects anyway."""
    ca, _, _ = material(tls_bed)
    options = ["--source-tls-ca", str(ca),
               "--target-tls-cert", tls_bed.target.tls_cert,
               "--target-tls-key", tls_bed.target.tls_key]
    if problem == "unknown-ca":
        options += ["--target-tls-ca", str(another_ca(tmp_path))]
        why = "signed by a CA this side does not trust"
    else:
        options += ["--target-tls-ca", str(ca), "--target-tls-server-name", "cassandra.example"]
        why = "not valid for the name"
    proxy = start_proxy(tls_bed, *options)
    write_through_proxy(tls_bed, proxy, keyspace, rows=10)
    assert count_on(tls_bed.source, keyspace) == 10
    log = proxy.log_text()
    lines = [line for line in log.splitlines() if "target cluster" in line and why in line]
    assert lines, log[-3000:]
    assert tls_bed.target.host in lines[0], lines[0]
    assert len([line for line in lines if "WARN" in line]) <= 2, lines

    insecure = start_proxy(tls_bed, *options, "--target-tls-insecure")
    write_through_proxy(tls_bed, insecure, keyspace + "_insecure", rows=10)
    assert count_on(tls_bed.target, keyspace + "_insecure") == 10
    assert "NOT checked" in insecure.log_text()


def wait_for_log(proxy, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proxy.log_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"'{text}' not in the proxy's log after {timeout:g}s")


def test_certificates_reload_on_sighup(tls_bed, start_proxy, tmp_path):
    """SIGHUP reads the proxy's certificate and key again: new clients get the new one, a
    client connected before keeps its connection, and a reload that fails changes nothing."""
    ca, cert, key = material(tls_bed)
    served_cert, served_key = tmp_path / "proxy.pem", tmp_path / "proxy.key"
    shutil.copy(cert, served_cert)
    shutil.copy(key, served_key)
    proxy = start_proxy(tls_bed, *cluster_tls(tls_bed), "--proxy-pem-certfile", str(served_cert),
                        "--proxy-pem-keyfile", str(served_key))
    before, session = tls_session(tls_bed, proxy, ca)
    try:
        assert session.execute("SELECT release_version FROM system.local").one()
        # The runtime's test certificate, from another CA, is valid for 127.0.0.1 too.
        shutil.copy(RUNTIME_TLS / "server.pem", served_cert)
        shutil.copy(RUNTIME_TLS / "server.key", served_key)
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for_log(proxy, "certificates and keys read again")
        after, fresh = tls_session(tls_bed, proxy, RUNTIME_TLS / "ca.pem")
        assert fresh.execute("SELECT release_version FROM system.local").one()
        after.shutdown()
        stale = login_cluster(tls_bed, [proxy.host], port=proxy.port, connect_timeout=10,
                        ssl_context=ssl.create_default_context(cafile=str(ca)))
        with pytest.raises(NoHostAvailable):
            stale.connect()
        stale.shutdown()
        # The connection opened before the reload goes on.
        assert session.execute("SELECT release_version FROM system.local").one()

        served_key.write_text("not a key\n")
        proxy.proc.send_signal(signal.SIGHUP)
        wait_for_log(proxy, "cannot reload the TLS files")
        again, fresh = tls_session(tls_bed, proxy, RUNTIME_TLS / "ca.pem")
        assert fresh.execute("SELECT release_version FROM system.local").one()
        again.shutdown()
    finally:
        before.shutdown()
    assert proxy.alive()


def test_plaintext_listener_beside_tls(tls_bed, start_proxy, keyspace):
    """--proxy-plain-port: during a move to TLS, plaintext clients use a port of their own
    while TLS clients use the main one, through the same proxy."""
    plain_port = free_port()
    proxy = start_proxy(tls_bed, *tls_options(tls_bed), "--proxy-plain-port", str(plain_port))
    ca, _, _ = material(tls_bed)
    plain = login_cluster(tls_bed, [proxy.host], port=plain_port, connect_timeout=15)
    try:
        write_through(plain.connect(), keyspace, rows=5)
    finally:
        plain.shutdown()
    cluster, session = tls_session(tls_bed, proxy, ca)
    try:
        assert session.execute(f"SELECT COUNT(*) FROM {keyspace}.t").one()[0] == 5
    finally:
        cluster.shutdown()
    # A plaintext client on the TLS port is refused.
    wrong = login_cluster(tls_bed, [proxy.host], port=proxy.port, connect_timeout=10)
    with pytest.raises(NoHostAvailable):
        wrong.connect()
    wrong.shutdown()
    assert count_on(tls_bed.target, keyspace) == 5


def test_certificates_reload_when_files_change(tls_bed, start_proxy, tmp_path):
    """Without a signal: replacing the proxy's certificate and key files is noticed within a
    few seconds, and new clients get the new certificate."""
    ca, cert, key = material(tls_bed)
    served_cert, served_key = tmp_path / "proxy.pem", tmp_path / "proxy.key"
    shutil.copy(cert, served_cert)
    shutil.copy(key, served_key)
    proxy = start_proxy(tls_bed, *cluster_tls(tls_bed),
                        "--proxy-pem-certfile", str(served_cert),
                        "--proxy-pem-keyfile", str(served_key))
    # Written to the side and renamed into place, as secret stores do: never half a file.
    for source, served in ((RUNTIME_TLS / "server.key", served_key),
                           (RUNTIME_TLS / "server.pem", served_cert)):
        shutil.copy(source, tmp_path / "next")
        (tmp_path / "next").replace(served)
    wait_for_log(proxy, "TLS files changed: certificates and keys read again", timeout=20)
    cluster, session = tls_session(tls_bed, proxy, RUNTIME_TLS / "ca.pem")
    try:
        assert session.execute("SELECT release_version FROM system.local").one()
    finally:
        cluster.shutdown()


def test_cluster_requiring_a_client_certificate(tls_bed, start_proxy, keyspace):
    """The bed's target requires a client certificate: without --target-tls-cert the proxy
    says so (naming the options that give one) and clients keep working on the source; with
    it, the target gets the writes (test_tls_everywhere)."""
    ca, _, _ = material(tls_bed)
    proxy = start_proxy(tls_bed, "--source-tls-ca", str(ca), "--target-tls-ca", str(ca))
    write_through_proxy(tls_bed, proxy, keyspace, rows=10)
    assert count_on(tls_bed.source, keyspace) == 10
    wait_for_log(proxy, "--target-tls-cert and --target-tls-key", timeout=20)
    line = next(line for line in proxy.log_text().splitlines()
                if "--target-tls-cert and --target-tls-key" in line)
    assert "target cluster" in line and "requires a client certificate" in line, line


def test_pkcs12_identity(tls_bed, start_proxy, proxy_binary, keyspace, tmp_path):
    """--proxy-pkcs12: the proxy's certificate and key from the PKCS#12 file the bed's nodes
    use (written by openssl), its password from a file; a wrong password stops the proxy at
    start-up with an error that names the option and not the password."""
    ca, _, _ = material(tls_bed)
    p12 = ca.parent / "node.p12"
    password_file = tmp_path / "p12-password"
    password_file.write_text("cqlmirror\n")  # the bed's keystore password (testbed/bed.py)
    proxy = start_proxy(tls_bed, *cluster_tls(tls_bed), "--proxy-pkcs12", str(p12),
                        "--proxy-pkcs12-password-file", str(password_file))
    cluster, session = tls_session(tls_bed, proxy, ca)
    try:
        write_through(session, keyspace, rows=5)
    finally:
        cluster.shutdown()
    assert count_on(tls_bed.target, keyspace) == 5

    wrong = "wrong-p12-password-4711"
    run = subprocess.run([str(proxy_binary), tls_bed.source.address, tls_bed.target.address,
                          "--proxy-port", str(free_port()), "--proxy-pkcs12", str(p12),
                          "--proxy-pkcs12-password", wrong],
                         capture_output=True, text=True, timeout=30)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "--proxy-pkcs12" in output and "wrong password" in output, output
    assert wrong not in output, output


def create_role(endpoint, role, password):
    cluster = endpoint.cluster()
    try:
        cluster.connect().execute(
            f"CREATE ROLE IF NOT EXISTS {role} WITH PASSWORD = '{password}' AND LOGIN = true")
    finally:
        cluster.shutdown()


def logged_in_users(endpoint):
    """The users of the client connections a node has open (its system_views.clients)."""
    cluster = endpoint.cluster()
    try:
        rows = cluster.connect().execute("SELECT username FROM system_views.clients")
        return {r.username for r in rows}
    finally:
        cluster.shutdown()


@pytest.mark.parametrize("source_login", ["relayed", "proxy"])
def test_different_logins_on_each_side(tls_bed, auth_bed, start_proxy, keyspace, tmp_path,
                                       source_login):
    """Both clusters require a login, with a different user on each: the source is the tls
    bed's (TLS, auth), the target the auth bed's (plaintext, auth). The proxy logs in to the
    target with its own --target-username (password from a file); the source gets the
    client's login relayed, or the proxy's own --source-username. Each cluster sees its own
    user, and the writes reach both."""
    suffix = keyspace[-8:]
    source_user, target_user = f"app_src_{suffix}", f"app_tgt_{suffix}"
    source_password, target_password = f"s-{suffix}-pw", f"t-{suffix}-pw"
    create_role(tls_bed.source, source_user, source_password)
    create_role(auth_bed.target, target_user, target_password)
    (tmp_path / "target-password").write_text(target_password + "\n")
    (tmp_path / "source-password").write_text(source_password + "\n")
    ca, _, _ = material(tls_bed)
    options = ["--source-tls-ca", str(ca), "--target-username", target_user,
               "--target-password-file", str(tmp_path / "target-password")]
    if source_login == "proxy":
        options += ["--source-username", source_user,
                    "--source-password-file", str(tmp_path / "source-password")]
        client_login = {}  # the proxy logs in to both: the client sends no credentials
    else:
        client_login = {"auth_provider": PlainTextAuthProvider(source_user, source_password)}
    mixed = type("Mixed", (), {"source": tls_bed.source, "target": auth_bed.target})
    proxy = start_proxy(mixed, *options)
    cluster = Cluster([proxy.host], port=proxy.port, connect_timeout=15, **client_login)
    try:
        write_through(cluster.connect(), keyspace, rows=20)
        # While the client's connections are open, each cluster names its own user.
        assert source_user in logged_in_users(tls_bed.source)
        assert target_user in logged_in_users(auth_bed.target)
    finally:
        cluster.shutdown()
    assert count_on(tls_bed.source, keyspace) == 20
    assert count_on(auth_bed.target, keyspace) == 20
    log = proxy.log_text()
    assert source_password not in log and target_password not in log


# Last in this module: the fixture below gives the tls bed's target an expired certificate
# until the end of the module.

@pytest.fixture(scope="module")
def expired_target(tls_bed, tmp_path_factory):
    """The tls bed's target node restarted serving a certificate that expired in January 2020
    (runtime/tests/tls/expired.pem, signed by expired-ca.pem); restarted with the bed's own
    certificate at the end of the module."""
    keystore = tmp_path_factory.mktemp("expired") / "expired.p12"
    subprocess.run(["openssl", "pkcs12", "-export", "-in", str(RUNTIME_TLS / "expired.pem"),
                    "-inkey", str(RUNTIME_TLS / "expired.key"), "-passout", "pass:cqlmirror",
                    "-out", str(keystore)], check=True, capture_output=True)
    node = tls_bed.target.host

    def restart(*options):
        for command in (("stop-node", node), ("start-node", node, *options)):
            run = bed.testbed("--name", "tls", *command)
            assert run.returncode == 0, f"testbed {' '.join(command)}: {run.stderr[-2000:]}"

    restart("--keystore", str(keystore))
    try:
        yield tls_bed
    finally:
        restart()


def test_target_certificate_expired(expired_target, start_proxy, keyspace):
    """A real target node serving an expired certificate is refused (clients keep working on
    the source, one line says the certificate expired, with the node's address);
    --target-tls-insecure connects anyway."""
    tls_bed = expired_target
    ca, _, _ = material(tls_bed)
    options = ["--source-tls-ca", str(ca), "--target-tls-ca", str(RUNTIME_TLS / "expired-ca.pem"),
               "--target-tls-cert", tls_bed.target.tls_cert,
               "--target-tls-key", tls_bed.target.tls_key]
    proxy = start_proxy(tls_bed, *options)
    write_through_proxy(tls_bed, proxy, keyspace, rows=10)
    assert count_on(tls_bed.source, keyspace) == 10
    wait_for_log(proxy, "its certificate has expired", timeout=20)
    lines = [line for line in proxy.log_text().splitlines()
             if "target cluster" in line and "its certificate has expired" in line]
    assert tls_bed.target.host in lines[0], lines[0]

    insecure = start_proxy(tls_bed, *options, "--target-tls-insecure")
    write_through_proxy(tls_bed, insecure, keyspace + "_insecure", rows=10)
    assert count_on_unchecked(tls_bed.target, keyspace + "_insecure") == 10


def count_on_unchecked(endpoint, keyspace):
    """Rows on a node whose certificate does not check out (read without checking it)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if endpoint.tls_cert:
        context.load_cert_chain(endpoint.tls_cert, endpoint.tls_key)
    cluster = Cluster([endpoint.host], port=endpoint.port, ssl_context=context,
                      connect_timeout=15)
    try:
        return cluster.connect().execute(f"SELECT COUNT(*) FROM {keyspace}.t").one()[0]
    finally:
        cluster.shutdown()
