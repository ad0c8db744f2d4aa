"""Failures of a run, classified: `transient` (the same run tried again may well succeed) or
`permanent` (something must change first). Pure code: no process, file or database.

A failed terraform command is judged from its exit code and its output by one table, RULES,
read top to bottom: the first rule whose pattern is found decides; a failure no rule names is
permanent. Every pattern comes from a message captured from the real terraform 1.0.3
(`tests/runs/terraform_failures.toml`, written by `scripts/capture_terraform_failures.py`,
which also says how each was produced), and `tests/runs/test_classify.py` checks each rule
against them. A failure that is not terraform's (a timeout, a run task, a hook) is classed by
its error kind (`class_of_kind`).

The pipeline retries `terraform init` when it fails transiently (docs/architecture.md §3);
other commands are never retried, their class is only shown on the run (`error_class`).

Terraform wraps its diagnostics at about 78 columns and may draw a box (│ ╷ ╵) around them,
so the output is flattened before matching: box characters dropped, every run of whitespace
made one space. Patterns are written against that flat text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import ErrorClass, ErrorKind

TRANSIENT, PERMANENT = ErrorClass.TRANSIENT, ErrorClass.PERMANENT


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    error_class: ErrorClass
    pattern: re.Pattern[str]
    why: str


def _rule(name: str, error_class: ErrorClass, pattern: str, why: str) -> Rule:
    return Rule(name, error_class, re.compile(pattern), why)


RULES: tuple[Rule, ...] = (
    # First: init validates the configuration before it downloads anything, and says so.
    _rule(
        "invalid_configuration",
        PERMANENT,
        r"There are some problems with the configuration, described below",
        "the configuration is invalid",
    ),
    # No such host, connection refused, TLS handshake timeout: the registry is not reachable.
    _rule(
        "registry_unreachable",
        TRANSIENT,
        r"could not connect to \S+: Failed to request discovery document",
        "a provider registry could not be reached",
    ),
    _rule(
        "module_registry_unreachable",
        TRANSIENT,
        r"Error accessing remote module registry .{0,300}?Failed to request discovery document",
        "the module registry could not be reached",
    ),
    # 429, or a 5xx terraform already retried ("please try again later"), on the version list,
    # the download or the checksums.
    _rule(
        "registry_busy",
        TRANSIENT,
        r"could not query provider registry for \S+: .{0,200}?"
        r"(?:please try again later|429 Too Many Requests)",
        "a provider registry answered busy or with a server error",
    ),
    _rule(
        "module_download_network",
        TRANSIENT,
        r"Failed to download module .{0,600}?"
        r"(?:Could not resolve host|Failed to connect to \S+ port \d+)",
        "a module's source host could not be reached",
    ),
    _rule(
        "state_locked",
        TRANSIENT,
        r"Error acquiring the state lock",
        "the state is locked by another terraform process",
    ),
    _rule(
        "plugin_crashed_at_start",
        TRANSIENT,
        r"failed to instantiate provider \S+ to obtain schema: "
        r"Unrecognized remote plugin message",
        "a provider plugin exited before it started",
    ),
)

_BOX = str.maketrans("", "", "│╷╵")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The class of a failure and why: the rule that matched (None: no rule did)."""

    error_class: ErrorClass
    rule: str | None
    why: str

    @property
    def transient(self) -> bool:
        return self.error_class is ErrorClass.TRANSIENT

    def describe(self) -> str:
        return f"{self.error_class}: {self.why}"


UNKNOWN = Verdict(PERMANENT, None, "no known transient cause")


def flatten(output: str) -> str:
    """The output as one line: box characters dropped, whitespace runs made one space."""
    return _SPACE.sub(" ", output.translate(_BOX)).strip()


def classify(code: int, output: str) -> Verdict:
    """The verdict on a terraform command that exited with `code` (non-zero) and printed
    `output` (stdout and stderr as the run log got them)."""
    if code < 0:
        # Killed by a signal tfward did not send (a stop is a cancel, not a failure): the
        # kernel's OOM killer, an operator's kill. Nothing says the run itself is wrong.
        return Verdict(TRANSIENT, "killed_by_signal", f"terraform was killed by signal {-code}")
    flat = flatten(output)
    for rule in RULES:
        if rule.pattern.search(flat):
            return Verdict(rule.error_class, rule.name, rule.why)
    return UNKNOWN


# Failures that are not a terraform command's: what trying again unchanged would do.
_BY_KIND: dict[ErrorKind, ErrorClass] = {
    ErrorKind.CONFIG: PERMANENT,
    ErrorKind.INIT: PERMANENT,  # terraform's own failures are judged by `classify`
    ErrorKind.PLAN: PERMANENT,
    ErrorKind.APPLY: PERMANENT,
    ErrorKind.STATE: PERMANENT,  # the state was refused or not stored: someone must look
    ErrorKind.RUN_TASK: PERMANENT,  # a task said no
    ErrorKind.HOOK: PERMANENT,  # a script said no
    ErrorKind.INTERNAL: PERMANENT,  # a bug in tfward
    ErrorKind.TIMEOUT: TRANSIENT,  # a slow registry, provider or task
    ErrorKind.LOCK: TRANSIENT,  # a user held the lock; it may be released
    ErrorKind.INTERRUPTED: TRANSIENT,  # the daemon stopped mid-apply
    ErrorKind.OWNER_LOST: PERMANENT,  # someone must check the state and unlock
}


def class_of_kind(kind: ErrorKind) -> ErrorClass:
    return _BY_KIND[kind]
