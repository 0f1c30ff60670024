"""Real servers for tests: nginx, Apache httpd, HAProxy and OpenSSH's sshd on loopback.

One launcher per program: :class:`NginxServer` serves certfleet's files for the deploy tests and
any number of planted sites (:class:`Site`) for the check tests (:func:`run_nginx`).

Each server runs as the current user with its configuration, pid file and error log in a folder
the test owns (``tmp_path``), listens on a port chosen free at run time, and is always stopped
when its ``with`` block (or the fixture around it) ends. A TLS server names the certificate and
key files it serves; certfleet's ``live/`` paths are the usual choice, so a deploy followed by
``reload_cmd`` changes what the server presents.

    with NginxServer(tmp_path / "nginx", cert=live / "fullchain.pem", key=live / "privkey.pem") as web:
        ... web.port, web.reload_cmd, web.test_cmd, web.probe ...
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from cryptography import x509

from support import require_peer

__all__ = [
    "ApacheServer",
    "HAProxyServer",
    "Nginx",
    "NginxServer",
    "Server",
    "Site",
    "SshServer",
    "empty_home",
    "free_port",
    "nginx_binary",
    "run_nginx",
    "served_chain",
    "sshd",
    "tls_server",
    "wait_for_port",
    "write_pair",
]

APACHE_MODULES = Path("/usr/lib/apache2/modules")
START_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, *, timeout: float = START_TIMEOUT, alive: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once ``host:port`` accepts connections; raise if it never does or ``alive`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"server exited with status {alive.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:g} s") from None
            time.sleep(0.05)


def served_chain(
    endpoint: str | int, server_name: str | None = None, timeout: float = 10.0, **context: Any
) -> list[x509.Certificate]:
    """The certificates ``host:port`` (or a port of 127.0.0.1) sends, in its order, from a plain
    ``ssl`` handshake with no verification; ``context`` sets attributes of the client's context
    (``maximum_version=...``).

    Independent of certfleet's probe on purpose: tests prove what certfleet deployed with it.
    """
    if isinstance(endpoint, int):
        host, port = "127.0.0.1", endpoint
    else:
        text, _, port_text = endpoint.rpartition(":")
        host, port = text.strip("[]"), int(port_text)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for name, value in context.items():
        setattr(ctx, name, value)
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        ctx.wrap_socket(sock, server_hostname=server_name) as tls,
    ):
        # CPython 3.11 has the chain as sent only on the private SSL object
        chain = tls._sslobj.get_unverified_chain()  # type: ignore[attr-defined]
        return [x509.load_der_x509_certificate(c.public_bytes(ssl._ssl.ENCODING_DER)) for c in chain]  # type: ignore[attr-defined]


def _sh(*argv: str | Path) -> str:
    return shlex.join(str(a) for a in argv)


@dataclass(frozen=True)
class Site:
    """One nginx ``server`` block: the chain it serves (leaf first, as sent) and its key."""

    name: str
    fullchain_pem: bytes
    key_pem: bytes
    # OpenSSL 3 refuses to load SHA-1 signed certificates at its default security level
    weak: bool = False
    host: str = "127.0.0.1"
    protocols: str = "TLSv1.2 TLSv1.3"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx (the tests need the real server)")
    return found


def _nginx_conf(folder: Path, blocks: str, *, workers: int, rlimit: int, connections: int) -> str:
    temp = folder / "temp"
    temp.mkdir(exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {rlimit};
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections {connections}; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type text/plain;
{blocks}
}}
"""


def _free_ports(hosts: Sequence[str]) -> list[int]:
    """One distinct free port per host: every socket is held until all are chosen, so the kernel
    cannot hand out the same port twice (nginx would quietly share it between two server blocks)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def write_pair(folder: Path, stem: str, fullchain_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    """Write ``stem.crt`` (the chain as it will be served) and ``stem.key`` (0600 from birth)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert = folder / f"{stem}.crt"
    cert.write_bytes(fullchain_pem)
    key = folder / f"{stem}.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    return cert, key


class Server:
    """One server process in ``workdir``; a context manager that always stops it."""

    name = "server"

    def __init__(self, workdir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.addresses: list[tuple[str, int]] = [(host, self.port)]  # what must listen once started
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{self.name}.log"

    @property
    def probe(self) -> str:
        """``host:port`` as a node's probe endpoint."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def reload_cmd(self) -> str:
        """A shell command that makes the server read its certificate files again."""
        raise NotImplementedError

    @property
    def test_cmd(self) -> str:
        """A shell command that checks the server's configuration (and the files it names)."""
        raise NotImplementedError

    def start(self) -> Self:
        require_peer(self.name)
        argv = self.command()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            for host, port in self.addresses:
                wait_for_port(host, port, alive=self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.errors()}") from None
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def errors(self) -> str:
        """What the server logged, for a failing test's message."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class NginxServer(Server):
    """nginx in the foreground (``daemon off``): one TLS ``server`` block for ``cert`` and ``key``
    on ``port``, and one per :class:`Site` on a port of its own; ``nginx -s reload`` reloads."""

    name = "nginx"

    def __init__(
        self,
        workdir: Path,
        *,
        cert: Path | None = None,
        key: Path | None = None,
        sites: Sequence[Site] = (),
        port: int | None = None,
        host: str = "127.0.0.1",
        workers: int = 1,
        rlimit: int = 4096,
        connections: int = 1024,
    ) -> None:
        super().__init__(workdir, port=port, host=host)
        self.conf = workdir / "nginx.conf"
        self.error_log = workdir / "error.log"
        self.ports: dict[str, int] = {}
        self.hosts: dict[str, str] = {}
        blocks: list[str] = []
        self.addresses = []
        if cert is not None and key is not None:
            blocks.append(_server_block(host, self.port, cert, key, 'return 200 "ok\\n";'))
            self.addresses.append((host, self.port))
        for site, site_port in zip(sites, _free_ports([site.host for site in sites]), strict=True):
            site_cert, site_key = write_pair(workdir / "sites", site.name, site.fullchain_pem, site.key_pem)
            self.ports[site.name], self.hosts[site.name] = site_port, site.host
            extra = "    ssl_ciphers DEFAULT:@SECLEVEL=0;\n" if site.weak else ""
            extra += f"    ssl_protocols {site.protocols};\n"
            body = f'location / {{ return 200 "{site.name}\\n"; }}'
            blocks.append(_server_block(site.host, site_port, site_cert, site_key, body, extra=extra))
            self.addresses.append((site.host, site_port))
        conf = _nginx_conf(workdir, "".join(blocks), workers=workers, rlimit=rlimit, connections=connections)
        self.conf.write_text(conf)

    def _base(self) -> list[str]:
        return [nginx_binary(), "-p", str(self.workdir), "-c", str(self.conf), "-e", str(self.error_log)]

    def command(self) -> list[str]:
        return self._base()

    @property
    def reload_cmd(self) -> str:
        return _sh(*self._base(), "-s", "reload")

    @property
    def test_cmd(self) -> str:
        return _sh(*self._base(), "-t", "-q")

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError("nginx is not running")
        return self.proc

    @property
    def folder(self) -> Path:
        return self.workdir

    def target(self, site: str) -> str:
        """``host:port`` of a site's server block."""
        host = self.hosts[site]
        return f"[{host}]:{self.ports[site]}" if ":" in host else f"{host}:{self.ports[site]}"

    def error_text(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""


Nginx = NginxServer  # what run_nginx yields


def _server_block(host: str, port: int, cert: Path, key: Path, body: str, *, extra: str = "") -> str:
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (
        f"  server {{\n    listen {listen} ssl;\n    server_name _;\n"
        f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n{extra}"
        f"    {body}\n  }}\n"
    )


@contextlib.contextmanager
def run_nginx(
    folder: Path,
    sites: Sequence[Site],
    *,
    workers: int = 1,
    rlimit: int = 4096,
    connections: int = 1024,
) -> Iterator[NginxServer]:
    """Start nginx with one TLS ``server`` block per site on a free port; stop it on exit."""
    with NginxServer(folder, sites=sites, workers=workers, rlimit=rlimit, connections=connections) as server:
        yield server


class ApacheServer(Server):
    """Apache httpd (Debian's ``apache2``) with mod_ssl, in the foreground; ``-k graceful`` reloads."""

    name = "apache"

    def __init__(
        self,
        workdir: Path,
        *,
        cert: Path,
        key: Path,
        chain: Path | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(workdir, port=port, host=host)
        self.conf = workdir / "httpd.conf"
        listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        modules = "\n".join(
            f"LoadModule {name}_module {APACHE_MODULES / f'mod_{name}.so'}"
            for name in ("mpm_event", "authz_core", "unixd", "socache_shmcb", "ssl")
            if name != "unixd" or (APACHE_MODULES / "mod_unixd.so").exists()
        )
        chain_line = f"  SSLCertificateChainFile {chain}" if chain else ""
        # as root, httpd's children drop to an unprivileged user; as anyone else they stay as is
        user = "User nobody\nGroup nogroup" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"""ServerRoot {workdir}
ServerName localhost
Listen {listen}
PidFile {workdir / "httpd.pid"}
DefaultRuntimeDir {workdir}
ErrorLog {workdir / "httpd-error.log"}
LogLevel warn
{modules}
{user}
ServerLimit 1
StartServers 1
ThreadsPerChild 8
MinSpareThreads 1
MaxSpareThreads 8
MaxRequestWorkers 8
DocumentRoot {workdir}
SSLSessionCache none
<VirtualHost {listen}>
  SSLEngine on
  SSLCertificateFile {cert}
  SSLCertificateKeyFile {key}
{chain_line}
</VirtualHost>
"""
        )

    def command(self) -> list[str]:
        return ["apache2", "-f", str(self.conf), "-DFOREGROUND"]

    @property
    def reload_cmd(self) -> str:
        return _sh("apache2", "-f", self.conf, "-k", "graceful")

    @property
    def test_cmd(self) -> str:
        return _sh("apache2", "-f", self.conf, "-t")


class HAProxyServer(Server):
    """HAProxy in master-worker mode in the foreground; SIGUSR2 to the master reloads it."""

    name = "haproxy"

    def __init__(self, workdir: Path, *, combined: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(workdir, port=port, host=host)
        self.conf = workdir / "haproxy.cfg"
        self.pidfile = workdir / "haproxy.pid"
        bind = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.conf.write_text(
            f"""global
  log stderr format short local0 notice
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend fe
  bind {bind} ssl crt {combined}
  http-request return status 200 content-type text/plain string ok
"""
        )

    def command(self) -> list[str]:
        return ["haproxy", "-W", "-f", str(self.conf), "-p", str(self.pidfile)]

    @property
    def reload_cmd(self) -> str:
        return f"kill -USR2 $(cat {shlex.quote(str(self.pidfile))})"

    @property
    def test_cmd(self) -> str:
        return _sh("haproxy", "-c", "-q", "-f", self.conf)

    def stop(self) -> None:
        # the master stops its workers on SIGTERM; SIGUSR1 would wait for connections to drain
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        super().stop()


class SshServer(Server):
    """OpenSSH's sshd on loopback: a generated host key, a generated user key, SFTP enabled.

    ``url`` and ``options`` are what a node's transport needs; ``known_hosts`` lists this
    server's host key (``unknown_hosts`` a file that does not).
    """

    name = "sshd"

    def __init__(self, workdir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(workdir, port=port, host=host)
        self.user = getpass.getuser()
        self.host_key = workdir / "ssh_host_ed25519_key"
        self.user_key = workdir / "id_ed25519"
        self.authorized_keys = workdir / "authorized_keys"
        self.known_hosts = workdir / "known_hosts"
        self.unknown_hosts = workdir / "known_hosts_other"
        self.conf = workdir / "sshd_config"
        for path in (self.host_key, self.user_key, workdir / "other_host_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "certfleet-test", "-f", str(path)],
                check=True,
                capture_output=True,
            )
        shutil.copyfile(self.user_key.with_suffix(".pub"), self.authorized_keys)
        hostport = f"[{host}]:{self.port}"
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        other_pub = (workdir / "other_host_key.pub").read_text().split()
        self.known_hosts.write_text(f"{hostport} {host_pub[0]} {host_pub[1]}\n")
        self.unknown_hosts.write_text(f"{hostport} {other_pub[0]} {other_pub[1]}\n")
        sftp = "/usr/lib/openssh/sftp-server"
        self.conf.write_text(
            f"""ListenAddress {host}
Port {self.port}
HostKey {self.host_key}
PidFile {workdir / "sshd.pid"}
AuthorizedKeysFile {self.authorized_keys}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp {sftp if Path(sftp).exists() else "internal-sftp"}
LogLevel ERROR
"""
        )

    def command(self) -> list[str]:
        # sshd refuses to start without its privilege-separation folder
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        return ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.conf)]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"

    @property
    def options(self) -> dict[str, str]:
        return {"known_hosts": str(self.known_hosts), "identity": str(self.user_key)}


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An sshd on loopback for a test module (import this fixture into the module that uses it)."""
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with no ~/.ssh, and no agent: only what a test gives explicitly can work with sshd."""
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def tls_server(kind: str, workdir: Path, live: Path) -> Server:
    """The server that reads certfleet's ``kind`` layout from the ``live`` folder (not started)."""
    if kind == "nginx":
        return NginxServer(workdir, cert=live / "fullchain.pem", key=live / "privkey.pem")
    if kind == "apache":
        return ApacheServer(workdir, cert=live / "cert.pem", chain=live / "chain.pem", key=live / "privkey.pem")
    if kind == "haproxy":
        return HAProxyServer(workdir, combined=live / "combined.pem")
    raise ValueError(f"no test server reads the {kind} layout")
