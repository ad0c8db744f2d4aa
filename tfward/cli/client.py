"""How the CLI reaches the daemon: connection settings, the HTTP client, errors -> exit codes.

Settings (`resolve`): the URL is `--url`, else `$TFWARD_URL`, else http://127.0.0.1:8700. The
token is `--token`, else `$TFWARD_TOKEN`, else the file `<data_dir>/admin.token` of the config
named by `--config` / `$TFWARD_CONFIG` / ./tfward.toml / examples/tfward.toml (the first that
exists). Having no token is fine: requests then go without `Authorization`.

Every failure becomes a `CliError` carrying the exit code and a message that says what to do
next; httpx's exceptions and the API's error bodies are translated here and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import httpx

EXIT_OK = 0
EXIT_FAILED = 1  # the run failed (or applied_state_error); the daemon answered 5xx
EXIT_USAGE = 2  # bad arguments, a config error, a request the daemon refused (4xx)
EXIT_STOPPED = 3  # the run was cancelled or discarded
EXIT_UNREACHABLE = 4  # no daemon at the URL, or the connection broke
EXIT_INTERRUPTED = 130  # Ctrl-C: the CLI stopped, the run goes on

DEFAULT_URL = "http://127.0.0.1:8700"
CONFIG_CANDIDATES = ("tfward.toml", "examples/tfward.toml")
TIMEOUT = 30.0
START_HINT = "is it running? start it with `tfward serve CONFIG` or `make run`"


class CliError(Exception):
    """A command cannot go on; `code` is the exit code, the message says what to do next."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the daemon is and how to authenticate; `token_source` says where the token came
    from (or why there is none), for error messages."""

    url: str
    token: str | None
    token_source: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def resolve(
    url: str | None,
    token: str | None,
    config: str | None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """The connection settings from the flags, the environment and the config file.

    The config file is read only when no token was given; an explicitly named config that does
    not load is an error (exit 2), a discovered one that does not load is skipped."""
    base = (url or environ.get("TFWARD_URL") or DEFAULT_URL).rstrip("/")
    if token:
        return Settings(base, token, "--token")
    if environ.get("TFWARD_TOKEN"):
        return Settings(base, environ["TFWARD_TOKEN"], "$TFWARD_TOKEN")
    found, source = _token_file(config or environ.get("TFWARD_CONFIG"))
    return Settings(base, found, source)


def _token_file(explicit: str | None) -> tuple[str | None, str]:
    from tfward.config import load_config
    from tfward.errors import ConfigError

    if explicit is None:
        path = next((p for p in CONFIG_CANDIDATES if Path(p).is_file()), None)
        if path is None:
            return None, "no token (no --token, $TFWARD_TOKEN or tfward.toml here)"
    else:
        path = explicit
    try:
        config = load_config(path)
    except ConfigError as exc:
        if explicit is not None:
            raise CliError(EXIT_USAGE, f"config error: {exc}") from None
        return None, f"no token ({path} did not load: {exc})"
    file = config.daemon.data_dir / "admin.token"
    try:
        text = file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None, f"no token ({file} does not exist)"
    except OSError as exc:
        return None, f"no token (cannot read {file}: {exc.strerror or exc})"
    return (text or None), (str(file) if text else f"no token ({file} is empty)")


def unreachable(settings: Settings, exc: httpx.TransportError) -> CliError:
    """Translate a transport failure: the daemon is not there, or it went away."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return CliError(
            EXIT_UNREACHABLE,
            f"cannot reach the daemon at {settings.url} ({reason}): {START_HINT}; "
            "or point --url / $TFWARD_URL at it",
        )
    return CliError(
        EXIT_UNREACHABLE,
        f"the connection to the daemon at {settings.url} failed ({type(exc).__name__}: "
        f"{reason}): is it still running? check with `curl {settings.url}/healthz`",
    )


def refused(settings: Settings, response: httpx.Response) -> CliError:
    """Translate an error answer of the API into what the user should do about it."""
    status = response.status_code
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text.strip() or response.reason_phrase
    if status == 401:
        return CliError(
            EXIT_USAGE,
            f"the daemon wants an API token ({message}; {settings.token_source}): pass --token, "
            "set $TFWARD_TOKEN, or run where the daemon's <data_dir>/admin.token is readable",
        )
    if status == 403:
        return CliError(
            EXIT_USAGE,
            f"the token from {settings.token_source} may not do this ({message}): use a token "
            "with a stronger role (`tfward token create --name N --role apply|admin`)",
        )
    if status >= 500:
        return CliError(EXIT_FAILED, f"the daemon could not do it: {message} (HTTP {status})")
    hint = next((h for start, h in _NOT_FOUND_HINTS if message.startswith(start)), None)
    if status == 404 and hint:
        message += f": {hint}"
    return CliError(EXIT_USAGE, f"{message} (HTTP {status})")


_NOT_FOUND_HINTS = (
    ("run ", "list runs with `tfward runs [WORKSPACE]`"),
    ("workspace ", "list workspaces with `tfward workspaces`"),
    ("state version ", "list them with `tfward state list WORKSPACE`"),
)


class Api:
    """The daemon's API, synchronous: one connection pool for the command's lifetime."""

    def __init__(self, settings: Settings, timeout: float = TIMEOUT) -> None:
        self.settings = settings
        self.http = httpx.Client(base_url=settings.url, headers=settings.headers(), timeout=timeout)

    def __enter__(self) -> Api:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The raw response of a successful request; every failure raises `CliError`."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.settings, exc) from None
        if not response.is_success:
            raise refused(self.settings, response)
        return response

    def download(self, path: str, out: BinaryIO) -> int:
        """Stream a GET's body into `out` (a large log is never held in memory); its size."""
        size = 0
        try:
            with self.http.stream("GET", path) as response:
                if not response.is_success:
                    response.read()
                    raise refused(self.settings, response)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        except httpx.TransportError as exc:
            raise unreachable(self.settings, exc) from None
        return size

    def get(self, path: str, **params: Any) -> Any:
        """The `data` of a GET; a long-poll passes its own `timeout` in `params`' stead."""
        timeout = params.pop("http_timeout", None)
        extra = {"timeout": timeout} if timeout else {}
        return self.request("GET", path, params=params, **extra).json()["data"]

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=dict(body) if body else None).json()["data"]

    def run(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/v1/runs/{run_id}")
        return result
