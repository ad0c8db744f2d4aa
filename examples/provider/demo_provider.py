"""A tiny Terraform provider, ``example.com/tfward/demo``, written with the ``tf`` library.

It exists so that tfward's tests and demos can drive *real* Terraform against something
that behaves like real infrastructure without any network access:

* ``demo_thing`` resources live in a "backing store": a folder of JSON files, one per
  resource (``<store_dir>/<id>.json``).  Deleting or editing such a file behind
  Terraform's back is how tests simulate out-of-band changes (drift, lost resources).
* ``delay`` makes create/update slow, so a run can be interrupted while calls are in flight.
* ``fail`` makes create/update fail after the delay, so a run can fail part-way.
* ``$TFWARD_DEMO_CRASH_AT_START`` (any non-empty value) makes the plugin exit at start, before
  the handshake: a provider that crashes on start, for tests of how terraform reports it.
* ``calls_log`` records every CRUD call, once it is over, as one JSON line, so tests can
  count calls::

      {"op": "create", "name": "t0", "id": "thing-t0-1a2b3c4d", "ok": true,
       "pid": 1234, "time": 1700000000.123}

  ``op`` is create/read/update/delete; ``id`` is null for a failed create; ``ok`` is false
  for a failed create/update and for a read that found the thing gone.

Terraform loads it through ``dev_overrides`` (see ``terraform-provider-demo`` next to this
file, which is the executable Terraform actually starts).

Provider configuration (all optional)::

    provider "demo" {
      store_dir = "/path/to/store"   # fallback: $TFWARD_DEMO_STORE_DIR
      calls_log = "/path/calls.jsonl" # fallback: $TFWARD_DEMO_CALLS_LOG
    }
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

try:
    from tf.iface import (
        Config,
        CreateContext,
        DataSource,
        DeleteContext,
        Provider,
        ReadContext,
        Resource,
        State,
        UpdateContext,
    )
    from tf.schema import Attribute, Schema
    from tf.types import Bool, Number, String, Unknown
    from tf.utils import Diagnostics
except ImportError as exc:  # pragma: no cover - a setup problem, said plainly
    sys.exit(
        f"demo provider: {exc}. It needs the PyPI package `tf` in {sys.executable};"
        " install the project's dev extras into <repo>/.venv."
    )

FULL_NAME = "example.com/tfward/demo"
STORE_DIR_ENV = "TFWARD_DEMO_STORE_DIR"
CALLS_LOG_ENV = "TFWARD_DEMO_CALLS_LOG"
# Set (to anything but empty): the plugin exits at start, before the go-plugin handshake, as a
# provider that crashed on start would. Tests use it to capture what terraform then says.
CRASH_AT_START_ENV = "TFWARD_DEMO_CRASH_AT_START"

# Serialises appends to the calls log within this process.  Terraform runs up to 10
# resource operations concurrently (gRPC thread pool), and several providers (one per
# terraform process) may share one log, so each line is also written with a single
# O_APPEND write, which Linux keeps whole for regular files.
_log_lock = threading.Lock()


def _setting(config: Config, key: str, env: str) -> str | None:
    """A provider setting: the configured value, else the env var, else None.

    Unknown values (a provider block that depends on not-yet-known values) count as unset.
    """
    value = config.get(key)
    if value is None or value is Unknown:
        return os.environ.get(env) or None
    return str(value)


class DemoProvider(Provider):
    """The provider: holds the configured store folder and calls log for its resources."""

    def __init__(self) -> None:
        # Terraform always calls ConfigureProvider before any CRUD call, but start from the
        # env fallbacks anyway so a resource never sees a half-initialised provider.
        self.store_dir: Path | None = None
        self.calls_log: Path | None = None
        self.configure_provider(Diagnostics(), {})

    def get_model_prefix(self) -> str:
        return "demo_"

    def full_name(self) -> str:
        return FULL_NAME

    def get_provider_schema(self, diags: Diagnostics) -> Schema:
        return Schema(
            attributes=[
                Attribute(
                    "store_dir",
                    String(),
                    optional=True,
                    description=f"Folder of JSON files backing the things (else ${STORE_DIR_ENV}).",
                ),
                Attribute(
                    "calls_log",
                    String(),
                    optional=True,
                    description=f"File to log every CRUD call to (else ${CALLS_LOG_ENV}).",
                ),
            ]
        )

    def validate_config(self, diags: Diagnostics, config: Config) -> None:
        pass

    def configure_provider(self, diags: Diagnostics, config: Config) -> None:
        store_dir = _setting(config, "store_dir", STORE_DIR_ENV)
        calls_log = _setting(config, "calls_log", CALLS_LOG_ENV)
        self.store_dir = Path(store_dir) if store_dir else None
        self.calls_log = Path(calls_log) if calls_log else None
        if self.store_dir is not None:
            try:
                self.store_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                diags.add_error(f"demo: cannot create store_dir {self.store_dir}", str(exc))

    def get_data_sources(self) -> list[type[DataSource]]:
        return []

    def get_resources(self) -> list[type[Resource]]:
        return [DemoThing]

    # -- helpers used by the resource ------------------------------------------------

    def log_call(self, op: str, name: Any, id_: Any, ok: bool) -> None:
        """Append one JSON line describing a finished CRUD call to the calls log, if any."""
        if self.calls_log is None:
            return
        line = json.dumps(
            {"op": op, "name": name, "id": id_, "ok": ok, "pid": os.getpid(), "time": time.time()}
        )
        data = (line + "\n").encode()
        with _log_lock:
            fd = os.open(self.calls_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def store_path(self, id_: str) -> Path | None:
        return None if self.store_dir is None else self.store_dir / f"{id_}.json"

    def store_write(self, state: State) -> None:
        """Write a resource's attributes to its store file atomically (temp file + rename).

        A kill mid-write then leaves either the old file or the new one, never a torn one.
        """
        path = self.store_path(state["id"])
        if path is None:
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; the store is meant to be inspected
            with os.fdopen(fd, "w") as f:
                json.dump(state, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class DemoThing(Resource):
    """``demo_thing``: a named thing with an optional payload, stored as one JSON file."""

    ATTRIBUTES = ("name", "delay", "fail", "value", "id")

    def __init__(self, provider: DemoProvider) -> None:
        self.provider = provider

    @classmethod
    def get_name(cls) -> str:
        return "thing"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            # An explicit version: with None, tf "upgrades" the state on every read and
            # attaches a warning to it.
            version=0,
            attributes=[
                Attribute(
                    "name",
                    String(),
                    required=True,
                    requires_replace=True,
                    description="Name of the thing; changing it replaces the thing.",
                ),
                # delay and fail are plain optional (not computed): unset means null in the
                # state, read as 0 / false.  Optional+computed with a default would keep an
                # old value in the state after it is removed from the configuration.
                Attribute(
                    "delay",
                    Number(),
                    optional=True,
                    description="Seconds to sleep in create and update (null = 0).",
                ),
                Attribute(
                    "fail",
                    Bool(),
                    optional=True,
                    description="If true, create and update fail on purpose after the delay.",
                ),
                Attribute("value", String(), optional=True, description="Arbitrary payload."),
                Attribute("id", String(), computed=True, description="thing-<name>-<8 hex>."),
            ],
        )

    # -- lifecycle ---------------------------------------------------------------------
    #
    # Every call is logged in a ``finally`` once it is over, so the log shows what reached
    # the provider even when the call failed; "ok" says whether it did its job.

    def _work(self, ctx: CreateContext | UpdateContext, planned: State) -> bool:
        """The slow, possibly failing part of create and update; False if it failed."""
        delay = float(planned.get("delay") or 0)  # terraform may send a number as a string
        if delay > 0:
            time.sleep(float(delay))
        if planned.get("fail"):
            ctx.diagnostics.add_error(f"demo_thing {planned['name']}: failing on purpose")
            return False
        return True

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        state: State | None = None
        try:
            if self._work(ctx, planned):
                state = {**planned, "id": f"thing-{planned['name']}-{secrets.token_hex(4)}"}
                self.provider.store_write(state)
            # None with an error diagnostic: nothing was created, nothing enters the state.
            return state
        finally:
            self.provider.log_call(
                "create", planned.get("name"), state["id"] if state else None, state is not None
            )

    def read(self, ctx: ReadContext, current: State) -> State | None:
        found = True
        try:
            path = self.provider.store_path(current["id"])
            if path is None:
                # No backing store: the state is the only truth there is.
                return current
            try:
                stored = json.loads(path.read_text())
            except FileNotFoundError:
                found = False
                # Gone from the real world: Terraform drops it from the state and plans
                # to create it again.
                return None
            except (OSError, ValueError) as exc:
                found = False
                ctx.diagnostics.add_error(
                    f"demo_thing {current.get('name')}: cannot read {path}", str(exc)
                )
                return current
            # The store wins, so edits made behind Terraform's back show up as drift.
            return {k: stored.get(k, current.get(k)) for k in self.ATTRIBUTES}
        finally:
            self.provider.log_call("read", current.get("name"), current.get("id"), found)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        state: State | None = None
        try:
            if not self._work(ctx, planned):
                # Nothing changed in the real world: keep the prior state.
                return current
            state = {**planned, "id": current["id"]}
            self.provider.store_write(state)
            return state
        finally:
            self.provider.log_call(
                "update", planned.get("name"), current.get("id"), state is not None
            )

    def delete(self, ctx: DeleteContext, current: State) -> None:
        try:
            path = self.provider.store_path(current["id"])
            if path is not None:
                # Already gone counts as deleted: delete must be idempotent.
                path.unlink(missing_ok=True)
        finally:
            self.provider.log_call("delete", current.get("name"), current.get("id"), True)


# -- plugin server -------------------------------------------------------------------
#
# tf's own ``runner.run_provider`` is not used: it stops the gRPC server (grace=0) as soon
# as Terraform calls StopProvider.  Terraform calls StopProvider when it is interrupted
# (SIGINT/SIGTERM), *while* resource operations are still in flight, so with tf's runner
# every in-flight create dies with "Plugin did not respond" and its thing exists in the
# store but never reaches terraform.tfstate.  In the plugin protocol, StopProvider only
# asks for in-flight operations to wrap up; the process ends when go-plugin's
# GRPCController.Shutdown arrives (after Terraform has finished with the provider), or,
# failing that, when Terraform kills it.

# go-plugin's handshake cookie for Terraform providers: set by Terraform in the plugin's
# environment, so its absence means a person ran the binary by hand.
_MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
_MAGIC_COOKIE_VALUE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"

# Worker threads for gRPC calls.  Terraform runs up to -parallelism (default 10) resource
# operations at once, and StopProvider/Validate* calls must still get a thread while
# those are sleeping in ``delay``.
_MAX_WORKERS = 32


def _say(message: str) -> None:
    """A line for Terraform's log (our stderr); lost without fuss if terraform is gone."""
    try:
        print(f"demo: {message}", file=sys.stderr, flush=True)
    except OSError:
        pass


def _server_credentials() -> tuple[bytes, Any]:
    """A fresh self-signed certificate for go-plugin's automatic mutual TLS.

    Returns the certificate (DER, sent to Terraform in the handshake line) and gRPC server
    credentials.  An EC key is generated per process (milliseconds) instead of caching an
    RSA key under $HOME as tf does, so the provider also works with an unwritable HOME.

    Client certificates are not required: Terraform 1.0.3 sets PLUGIN_CLIENT_CERT but
    does not present it (the TLS handshake fails with PEER_DID_NOT_RETURN_A_CERTIFICATE).
    The socket lives in a 0700 temp folder, so only the same user can reach it anyway.
    """
    import datetime

    import grpc
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)], require_client_auth=False)
    return cert.public_bytes(serialization.Encoding.DER), credentials


def serve(provider: Provider) -> None:
    """Serve ``provider`` to Terraform over go-plugin's gRPC protocol until shut down."""
    # Imported here: grpc and the generated stubs are the slow part of start-up, and
    # nothing above needs them.
    import base64
    from concurrent import futures

    import grpc
    from tf.gen import grpc_controller_pb2 as controller_pb
    from tf.gen import grpc_controller_pb2_grpc as controller_rpc
    from tf.gen import grpc_stdio_pb2_grpc as stdio_rpc
    from tf.gen import tfplugin_pb2 as pb
    from tf.gen import tfplugin_pb2_grpc as provider_rpc
    from tf.provider import ProviderServicer

    shutdown = threading.Event()

    class Servicer(ProviderServicer):
        def StopProvider(self, request: Any, context: Any) -> Any:
            # Acknowledge only: in-flight creates/updates finish and are reported, so
            # Terraform can record them before it exits.
            _say("StopProvider received; letting in-flight calls finish")
            return pb.StopProvider.Response()

    class Controller(controller_rpc.GRPCControllerServicer):
        def Shutdown(self, request: Any, context: Any) -> Any:
            shutdown.set()
            return controller_pb.Empty()

    class Stdio(stdio_rpc.GRPCStdioServicer):
        def StreamStdio(self, request: Any, context: Any) -> Any:
            # go-plugin opens this stream to relay the plugin's stdout/stderr; nothing
            # is relayed (stderr goes straight to Terraform's log), so end it at once.
            return iter(())

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=_MAX_WORKERS))
    provider_rpc.add_ProviderServicer_to_server(Servicer(provider), server)
    controller_rpc.add_GRPCControllerServicer_to_server(Controller(), server)
    stdio_rpc.add_GRPCStdioServicer_to_server(Stdio(), server)

    cert_der, credentials = _server_credentials()
    parent = os.getppid()
    with tempfile.TemporaryDirectory(prefix="tfward-demo-") as tmp:  # mode 0700
        sock = os.path.join(tmp, "plugin.sock")
        server.add_secure_port(f"unix://{sock}", credentials)
        server.start()
        # The go-plugin handshake: core protocol 1, Terraform plugin protocol 6.  It must
        # be the first line on stdout, and must not sit in a buffer.
        cert_b64 = base64.b64encode(cert_der).decode().rstrip("=")
        sys.stdout.write(f"1|6|unix|{sock}|grpc|{cert_b64}\n")
        sys.stdout.flush()
        # Wait for Shutdown.  Also give up if Terraform died without a Shutdown (e.g.
        # SIGKILL): we were re-parented, and nobody will ever call us again.
        while not shutdown.wait(0.25):
            if os.getppid() != parent:
                _say("terraform went away; exiting")
                break
        # A short grace so the Shutdown response itself gets out.
        server.stop(grace=1).wait()


def main() -> int:
    if os.environ.get(_MAGIC_COOKIE_KEY) != _MAGIC_COOKIE_VALUE:
        print(
            "This binary is a Terraform provider plugin; Terraform starts it (see"
            " dev_overrides in the CLI configuration). It is not meant to be run directly.",
            file=sys.stderr,
        )
        return 1
    if os.environ.get(CRASH_AT_START_ENV):
        _say(f"crashing at start: ${CRASH_AT_START_ENV} is set")
        return 2
    # Like Go plugins: a Ctrl-C in a terminal reaches the whole foreground process group,
    # but only terraform should act on it; terraform then asks us to stop over gRPC.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(DemoProvider())
    return 0


if __name__ == "__main__":
    sys.exit(main())
