"""Capture what the real terraform 1.0.3 prints when it fails, for the error classifier.

Writes `tests/runs/terraform_failures.toml`: one `[[capture]]` per failure, with the command,
its exit code, the class and rule `tfward/runs/classify.py` must give it, how it was produced
and the output verbatim (stdout and stderr merged into one file, as tfward reads them).
Everything happens offline on this machine:

- registries that cannot be reached: the public registry with no network (DNS fails), a port
  nobody listens on (connection refused), a loopback server that accepts and never answers
  TLS (handshake timeout);
- registries that answer badly: loopback HTTPS servers (a throwaway certificate, trusted
  through $SSL_CERT_FILE) that answer 503, 429, a 502 on the checksums, or 404;
- module sources that cannot be reached (registry, git over https);
- permanent mistakes: a bad version constraint, a syntax error, an undeclared variable, a
  provider that fails a create on purpose (the demo provider's `fail`);
- a provider plugin that exits at start (the demo provider with $TFWARD_DEMO_CRASH_AT_START);
- a state lock held by another terraform (an apply of slow demo things, then a plan with
  `-lock-timeout=1s` in the same directory).

Run it from the repository root with the project's virtualenv (it needs the bundled terraform,
git, and the demo provider's `tf` package):

    .venv/bin/python scripts/capture_terraform_failures.py
"""

from __future__ import annotations

import datetime
import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "tests" / "runs" / "terraform_failures.toml"
PROVIDER = REPO / "examples" / "provider"
DEMO_MAIN = REPO / "examples" / "workspaces" / "demo" / "main.tf"


@dataclass
class Capture:
    name: str
    command: str
    expect: str  # transient | permanent
    rule: str  # the classifier's rule, "" for none
    how: str
    files: dict[str, str]
    args: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    tfrc: str = ""
    exit: int = 0
    output: str = ""


def provider_block(source: str, version: str = "") -> str:
    extra = f'\n      version = "{version}"' if version else ""
    return (
        "terraform {\n  required_providers {\n    thing = {\n"
        f'      source = "{source}"{extra}\n    }}\n  }}\n}}\n'
    )


DEV_TFRC = (
    'provider_installation {\n  dev_overrides {\n    "example.com/tfward/demo" = '
    f"{json.dumps(str(PROVIDER))}\n  }}\n  direct {{}}\n}}\n"
)


def scenarios(ports: dict[str, int]) -> list[Capture]:
    demo = {"main.tf": DEMO_MAIN.read_text()}
    local = "localhost:{}/tfward/thing"
    return [
        Capture("registry_no_such_host", "init", "transient", "registry_unreachable",
                "a provider of registry.terraform.io, no network: the DNS lookup fails",
                {"main.tf": provider_block("hashicorp/nothere")}),
        Capture("registry_connection_refused", "init", "transient", "registry_unreachable",
                "a provider whose registry host is localhost:1, where nothing listens",
                {"main.tf": provider_block("localhost:1/tfward/thing")}),
        Capture("registry_tls_handshake_timeout", "init", "transient", "registry_unreachable",
                "a loopback server that accepts connections and never answers (10 s)",
                {"main.tf": provider_block(local.format(ports["silent"]))}),
        Capture("registry_503", "init", "transient", "registry_busy",
                "a loopback HTTPS registry that answers 503 to the version list",
                {"main.tf": provider_block(local.format(ports["503"]))}),
        Capture("registry_429", "init", "transient", "registry_busy",
                "a loopback HTTPS registry that answers 429 to the version list",
                {"main.tf": provider_block(local.format(ports["429"]))}),
        Capture("provider_checksums_502", "init", "transient", "registry_busy",
                "a loopback HTTPS registry: versions and download answered, checksums 502",
                {"main.tf": provider_block(local.format(ports["checksums"]))}),
        Capture("module_registry_no_such_host", "init", "transient",
                "module_registry_unreachable",
                "a module of registry.terraform.io, no network",
                {"main.tf": 'module "consul" {\n  source  = "hashicorp/consul/aws"\n'
                            '  version = "0.1.0"\n}\n'}),
        Capture("module_git_no_such_host", "init", "transient", "module_download_network",
                "a module from git over https to github.com, no network",
                {"main.tf": 'module "remote" {\n  source = '
                            '"git::https://github.com/hashicorp/example.git"\n}\n'}),
        Capture("module_git_connection_refused", "init", "transient", "module_download_network",
                "a module from git over https to localhost:1, where nothing listens",
                {"main.tf": 'module "remote" {\n  source = "git::https://localhost:1/x.git"\n}\n'}),
        Capture("provider_not_in_registry", "init", "permanent", "",
                "a loopback HTTPS registry that answers 404: no such provider",
                {"main.tf": provider_block(local.format(ports["404"]))}),
        Capture("bad_version_constraint", "init", "permanent", "invalid_configuration",
                'a required_providers version of "~> banana"',
                {"main.tf": provider_block("example.com/tfward/demo", "~> banana")}),
        Capture("syntax_error", "init", "permanent", "invalid_configuration",
                "a resource block that is never closed",
                {"main.tf": 'resource "demo_thing" "x" {\n  name = "a"\n'}),
        Capture("missing_local_module", "init", "permanent", "",
                "a module whose local source directory does not exist",
                {"main.tf": 'module "missing" {\n  source = "./no-such-module"\n}\n'}),
        Capture("undeclared_variable", "plan", "permanent", "",
                "a resource that uses a variable nobody declared (the demo provider, dev override)",
                {**demo, "extra.tf": 'resource "demo_thing" "broken" {\n'
                                     "  name = var.undeclared\n}\n"},
                args=("-var", "things=0"), tfrc=DEV_TFRC),
        Capture("provider_fails_a_create", "apply", "permanent", "",
                "a demo_thing with fail = true: the provider refuses the create",
                {**demo, "extra.tf": 'resource "demo_thing" "bad" {\n  name = "bad"\n'
                                     "  fail = true\n}\n"},
                args=("-auto-approve", "-var", "things=0"), tfrc=DEV_TFRC),
        Capture("provider_crashed_at_start", "plan", "transient", "plugin_crashed_at_start",
                "the demo provider with $TFWARD_DEMO_CRASH_AT_START=1 exits before its handshake",
                demo, args=("-var", "things=1"), tfrc=DEV_TFRC,
                env={"TFWARD_DEMO_CRASH_AT_START": "1"}),
    ]


def main() -> int:
    from tfward.config import parse_config

    binary = parse_config("", REPO / "tfward.toml").terraform.binary
    with tempfile.TemporaryDirectory(prefix="tfward-capture-") as tmp:
        root = Path(tmp)
        cert = make_certificate(root)
        with registries(cert) as ports:
            captures = [run(binary, root, c, cert) for c in scenarios(ports)]
        captures.append(state_lock(binary, root))
    OUT.write_text(render(captures))
    print(f"wrote {OUT} ({len(captures)} captures)")
    return 0


def base_env(root: Path, cert: Path | None, tfrc: str, name: str) -> dict[str, str]:
    config = root / f"{name}.tfrc"
    config.write_text(tfrc)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "TFWARD_"))}
    env.update(TF_IN_AUTOMATION="1", TF_INPUT="0", CHECKPOINT_DISABLE="1",
               TF_CLI_CONFIG_FILE=str(config), TFWARD_DEMO_STORE_DIR=str(root / "store"))
    if cert is not None:
        env["SSL_CERT_FILE"] = str(cert)
    (root / "store").mkdir(exist_ok=True)
    return env


def run(binary: str, root: Path, c: Capture, cert: Path) -> Capture:
    work = root / c.name
    work.mkdir()
    for name, text in c.files.items():
        (work / name).write_text(text)
    return run_in(binary, work, c, {**base_env(root, cert, c.tfrc, c.name), **(c.env or {})})


def state_lock(binary: str, root: Path) -> Capture:
    """An apply of slow things holds the state lock; a plan in the same directory waits 1 s."""
    c = Capture("state_locked", "plan", "transient", "state_locked",
                "an apply of a demo_thing that takes 8 s holds the lock; meanwhile "
                "`terraform plan -lock-timeout=1s` in the same directory",
                {"main.tf": DEMO_MAIN.read_text()},
                args=("-lock-timeout=1s", "-var", "things=1", "-var", "delay=8"), tfrc=DEV_TFRC)
    work = root / c.name
    work.mkdir()
    (work / "main.tf").write_text(DEMO_MAIN.read_text())
    env = base_env(root, None, c.tfrc, c.name)
    apply = subprocess.Popen(
        [binary, "apply", "-auto-approve", "-input=false", "-no-color", "-var", "things=1",
         "-var", "delay=8"], cwd=work, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (work / ".terraform.tfstate.lock.info").exists(), 60)
        return run_in(binary, work, c, env)
    finally:
        apply.wait(timeout=60)


def run_in(binary: str, work: Path, c: Capture, env: dict[str, str]) -> Capture:
    """Run the scenario's command the way tfward does: output to one file, no terminal."""
    out = work / "output.txt"
    with open(out, "wb") as fh:
        done = subprocess.run(
            [binary, c.command, "-input=false", "-no-color", *c.args], cwd=work, env=env,
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, timeout=120,
            check=False,
        )
    c.exit, c.output = done.returncode, out.read_text()
    print(f"{c.name}: exit {c.exit}")
    return c


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition did not come true in time")
        time.sleep(0.05)


def make_certificate(root: Path) -> Path:
    """A self-signed certificate for `localhost`; the key and certificate in one PEM file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = root / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    return path


class Registry(http.server.BaseHTTPRequestHandler):
    """A provider registry answering `mode`: 503, 429, 404, or `checksums` (502 there)."""

    mode = "503"
    port = 0

    def do_GET(self) -> None:  # the name http.server calls
        if self.path.startswith("/.well-known/terraform.json"):
            return self.send_json({"providers.v1": "/v1/providers/"})
        if self.mode != "checksums":
            return self.send_json({"errors": ["no"]}, int(self.mode))
        if self.path.endswith("/versions"):
            platform = {"os": "linux", "arch": "amd64"}
            return self.send_json({"versions": [
                {"version": "1.0.0", "protocols": ["5.0"], "platforms": [platform]}]})
        if "/download/" in self.path:
            files = f"https://localhost:{self.port}/files"
            return self.send_json({
                "protocols": ["5.0"], "os": "linux", "arch": "amd64",
                "filename": "terraform-provider-thing_1.0.0_linux_amd64.zip",
                "download_url": f"{files}/p.zip", "shasums_url": f"{files}/SHA256SUMS",
                "shasums_signature_url": f"{files}/SHA256SUMS.sig", "shasum": "0" * 64,
                "signing_keys": {"gpg_public_keys": []},
            })
        return self.send_json({"errors": ["bad gateway"]}, 502)

    def send_json(self, doc: object, status: int = 200) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def registries(cert: Path) -> Iterator[dict[str, int]]:
    """HTTPS registries on loopback (one per mode) and a socket that never answers."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.with_name("key.pem"))
    servers: list[http.server.HTTPServer] = []
    ports: dict[str, int] = {}
    for mode in ("503", "429", "404", "checksums"):
        handler = type(f"Registry{mode}", (Registry,), {"mode": mode})
        server = http.server.HTTPServer(("127.0.0.1", 0), handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        handler.port = ports[mode] = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    silent = socket.create_server(("127.0.0.1", 0))  # the backlog accepts; nobody answers
    ports["silent"] = silent.getsockname()[1]
    try:
        yield ports
    finally:
        silent.close()
        for server in servers:
            server.shutdown()
            server.server_close()


def render(captures: list[Capture]) -> str:
    head = [
        "# What terraform 1.0.3 prints when it fails, captured for tfward/runs/classify.py.",
        "# Written by scripts/capture_terraform_failures.py (see its docstring); do not edit.",
        "# `expect` and `rule` are what the classifier must answer; `how` says how each",
        "# failure was produced. Volatile parts (ports, lock ids, times) are as captured.",
        "",
    ]
    body = []
    for c in captures:
        if "'''" in c.output:
            raise ValueError(f"{c.name}: the output holds ''' and cannot be a TOML literal")
        body += [
            "[[capture]]",
            f"name = {json.dumps(c.name)}",
            f"command = {json.dumps(c.command)}",
            f"exit = {c.exit}",
            f"expect = {json.dumps(c.expect)}",
            f"rule = {json.dumps(c.rule)}",
            f"how = {json.dumps(c.how)}",
            f"output = '''\n{c.output}'''",
            "",
        ]
    return "\n".join(head + body)


if __name__ == "__main__":
    sys.exit(main())
