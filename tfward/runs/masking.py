"""Sensitive values out of a plan's JSON (`terraform show -json`) before tfward shows it (pure).

Terraform 1.0 writes every value of a plan in clear and says beside it which are sensitive.
`mask_plan_json` replaces each sensitive value with `MASK`, the marker the run log uses too:

- `variables.<name>.value` of a variable the workspace marks sensitive (`sensitive = [...]` or a
  secret reference) or the configuration declares `sensitive = true`; and such a variable's
  `default` in `configuration` (in any module), with a literal a module call passes to it;
- `before`/`after` of `resource_changes`, `resource_drift` and `output_changes`, walked in
  step with `before_sensitive`/`after_sensitive`;
- resource `values` in `planned_values` and `prior_state`, walked with `sensitive_values`,
  and outputs there marked `sensitive: true`.

In a walk, `true` hides the whole value under it and a table or array says which of the
elements to hide. Last, any string anywhere that contains one of the workspace's secret values
has it replaced: that catches a secret Terraform was never told is sensitive (a var listed only
in tfward's `sensitive`). As in the run log, the match is by substring, so a very short secret
also hides its look-alikes.

`SecretMask` is the one place that knows how a secret can be written: as it is, and in every
escaped form terraform and JSON produce (`secret_forms`). The run log, the plan JSON, state
outputs and inventory ids are all masked through it. A value *derived* from a secret
(`upper(var.secret)`, a hash, a substring) is none of those forms and cannot be found; the fix
is to declare the variable or the output `sensitive = true`, so terraform itself hides it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

MASK = "***"


class SecretMask:
    """Replaces every written form of a set of secret values with `MASK`.

    `forms` are the secrets as they are and each of their `secret_forms`, longest first, so a
    form containing another (or another secret) is replaced whole. The match is by substring:
    a very short secret also hides its look-alikes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        found = {form for secret in secrets if secret for form in secret_forms(secret)}
        self.forms: tuple[str, ...] = tuple(sorted(found, key=lambda f: (-len(f), f)))
        self._encoded = tuple(form.encode() for form in self.forms)

    def __bool__(self) -> bool:
        return bool(self.forms)

    def text(self, text: str) -> str:
        for form in self.forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def data(self, data: bytes) -> bytes:
        """`text` on UTF-8 bytes (the run log), without decoding them."""
        for form in self._encoded:
            if form in data:
                data = data.replace(form, MASK.encode())
        return data

    def value(self, value: Any) -> Any:
        """A copy of a JSON value with every string masked; a number whose text holds a
        secret (a numeric secret as an output) becomes `MASK` as a whole."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, int | float) and not isinstance(value, bool) and self.forms:
            written = json.dumps(value)
            return MASK if self.text(written) != written else value
        return value


def secret_forms(secret: str) -> set[str]:
    """`secret` and every way terraform and JSON write it: JSON strings (Python's, with and
    without `\\uXXXX` for non-ASCII; Go's, which also writes `<`, `>`, `&` as `\\u003c`...),
    Go's `%q` (terraform's plan and output rendering), HCL quoted strings; and each of those
    escaped once more (`jsonencode(var.secret)` printed by `%q`, a JSON string inside JSON)."""
    once = {escape(secret) for escape in _ESCAPES}
    return {secret} | once | {escape(form) for form in once for escape in _ESCAPES}


def _json_string(ascii_only: bool) -> Callable[[str], str]:
    return lambda text: json.dumps(text, ensure_ascii=ascii_only)[1:-1]


_GO_JSON = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _go_json(html: bool) -> Callable[[str], str]:
    """Go's encoding/json (terraform's `show -json`, state files, `jsonencode`): other control
    characters, U+2028/U+2029 and, with `html`, `<` `>` `&` as `\\u00XX`."""
    special = "<>&\u2028\u2029" if html else "\u2028\u2029"

    def escape(text: str) -> str:
        return "".join(
            _GO_JSON.get(ch) or (f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ch in special else ch)
            for ch in text
        )

    return escape


_GO_QUOTE = {
    '"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f",
    "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
}  # fmt: skip


def _go_quote(text: str) -> str:
    """Go's `%q` (`strconv.Quote`): printable characters as they are."""
    return "".join(
        _GO_QUOTE.get(ch) or (ch if ch.isprintable() else _unprintable(ch)) for ch in text
    )


def _hcl_quote(text: str) -> str:
    """An HCL quoted string (terraform console, HCL diagnostics): `${` and `%{` doubled."""
    escaped = "".join(
        _GO_JSON.get(ch) or (ch if ch.isprintable() else _unprintable(ch)) for ch in text
    )
    return escaped.replace("${", "$${").replace("%{", "%%{")


def _unprintable(ch: str) -> str:
    code = ord(ch)
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


_ESCAPES: tuple[Callable[[str], str], ...] = (
    _json_string(ascii_only=False),
    _json_string(ascii_only=True),
    _go_json(html=True),
    _go_json(html=False),
    _go_quote,
    _hcl_quote,
)


def secret_strings(value: Any) -> Iterator[str]:
    """The strings that give `value` away in text: a string itself; for anything else its
    JSON text and every string inside it (terraform prints collections element by element)."""
    if isinstance(value, str):
        yield value
        return
    yield json.dumps(_plain(value), ensure_ascii=False)
    yield from _string_leaves(value)


def state_secrets(raw: bytes) -> list[str]:
    """The strings of a state file's sensitive outputs. A consumer's `terraform_remote_state`
    gets them unmarked in terraform 1.0, so a run that read this state masks them."""
    try:
        outputs = json.loads(raw).get("outputs") or {}
    except (ValueError, AttributeError):
        return []
    if not isinstance(outputs, Mapping):
        return []
    return [
        text
        for out in outputs.values()
        if isinstance(out, Mapping) and out.get("sensitive")
        for text in secret_strings(out.get("value"))
        if text
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _string_leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _string_leaves(item)


def mask_plan_json(
    doc: Any, *, sensitive_vars: Collection[str] = (), secrets: Iterable[str] = ()
) -> Any:
    """A copy of the plan document `doc` with its sensitive values replaced; `doc` is unchanged.

    `sensitive_vars`: the workspace's sensitive names; `secrets`: its sensitive values as text
    (`WorkspaceConfig.sensitive_values()`). Sections that are missing or not shaped as expected
    are left as they are."""
    if not isinstance(doc, Mapping):
        return doc
    out = dict(doc)
    config = out.get("configuration")
    hidden = set(sensitive_vars) | _declared_sensitive(config)
    if isinstance(out.get("variables"), Mapping):
        out["variables"] = {
            name: _hide_value(entry) if name in hidden else entry
            for name, entry in out["variables"].items()
        }
    for key in ("resource_changes", "resource_drift"):
        if isinstance(out.get(key), list):
            out[key] = [_resource_change(entry) for entry in out[key]]
    if isinstance(out.get("output_changes"), Mapping):
        out["output_changes"] = {k: _change(c) for k, c in out["output_changes"].items()}
    if "planned_values" in out:
        out["planned_values"] = _values(out["planned_values"])
    prior = out.get("prior_state")
    if isinstance(prior, Mapping) and "values" in prior:
        out["prior_state"] = {**prior, "values": _values(prior["values"])}
    if isinstance(config, Mapping) and isinstance(config.get("root_module"), Mapping):
        out["configuration"] = {**config, "root_module": _config_module(config["root_module"])}
    mask = SecretMask(secrets)
    return mask.value(out) if mask else out


def mask_plan_bytes(
    raw: bytes, *, sensitive_vars: Collection[str] = (), secrets: Iterable[str] = ()
) -> bytes:
    """`mask_plan_json` on the stored bytes of a plan's JSON."""
    found = list(secrets)
    try:
        doc = json.loads(raw)
    except ValueError:
        # Never stored so (the pipeline checks), but if it were: hide what can be found.
        return SecretMask(found).data(raw)
    masked = mask_plan_json(doc, sensitive_vars=sensitive_vars, secrets=found)
    return json.dumps(masked, ensure_ascii=False, separators=(",", ":")).encode()


def _hide(value: Any, marks: Any) -> Any:
    """`value` with the parts `marks` (a `*_sensitive`/`sensitive_values` structure) marks."""
    if marks is True:
        return MASK
    if isinstance(marks, Mapping) and isinstance(value, Mapping):
        return {key: _hide(item, marks.get(key)) for key, item in value.items()}
    if isinstance(marks, list) and isinstance(value, list):
        return [_hide(item, marks[i] if i < len(marks) else None) for i, item in enumerate(value)]
    return value


def _declared_sensitive(config: Any) -> set[str]:
    """The root module's variables declared `sensitive = true`."""
    root = config.get("root_module") if isinstance(config, Mapping) else None
    return _sensitive_variables(root) if isinstance(root, Mapping) else set()


def _hide_value(entry: Any) -> Any:
    if isinstance(entry, Mapping) and "value" in entry:
        return {**entry, "value": MASK}
    return entry


def _resource_change(entry: Any) -> Any:
    if isinstance(entry, Mapping) and "change" in entry:
        return {**entry, "change": _change(entry["change"])}
    return entry


def _change(change: Any) -> Any:
    if not isinstance(change, Mapping):
        return change
    out = dict(change)
    for side in ("before", "after"):
        if side in out:
            out[side] = _hide(out[side], change.get(f"{side}_sensitive"))
    return out


def _values(values: Any) -> Any:
    """A `values` representation: outputs, and the resources of a module tree."""
    if not isinstance(values, Mapping):
        return values
    out = dict(values)
    if isinstance(out.get("outputs"), Mapping):
        out["outputs"] = {
            name: _hide_value(o) if isinstance(o, Mapping) and o.get("sensitive") else o
            for name, o in out["outputs"].items()
        }
    if "root_module" in out:
        out["root_module"] = _module_values(out["root_module"])
    return out


def _module_values(module: Any) -> Any:
    if not isinstance(module, Mapping):
        return module
    out = dict(module)
    if isinstance(out.get("resources"), list):
        out["resources"] = [
            {**r, "values": _hide(r["values"], r.get("sensitive_values"))}
            if isinstance(r, Mapping) and "values" in r
            else r
            for r in out["resources"]
        ]
    if isinstance(out.get("child_modules"), list):
        out["child_modules"] = [_module_values(child) for child in out["child_modules"]]
    return out


def _config_module(module: Mapping[str, Any]) -> dict[str, Any]:
    """A module of `configuration`: defaults of its sensitive variables, and literals passed to
    a called module's sensitive variables."""
    out = dict(module)
    declared = _sensitive_variables(module)
    if declared:
        out["variables"] = {
            name: {**v, "default": MASK} if name in declared and "default" in v else v
            for name, v in module["variables"].items()
        }
    calls = module.get("module_calls")
    if isinstance(calls, Mapping):
        out["module_calls"] = {name: _module_call(call) for name, call in calls.items()}
    return out


def _module_call(call: Any) -> Any:
    if not isinstance(call, Mapping) or not isinstance(call.get("module"), Mapping):
        return call
    out = {**call, "module": _config_module(call["module"])}
    declared = _sensitive_variables(call["module"])
    expressions = call.get("expressions")
    if declared and isinstance(expressions, Mapping):
        out["expressions"] = {
            arg: {**e, "constant_value": MASK}
            if arg in declared and isinstance(e, Mapping) and "constant_value" in e
            else e
            for arg, e in expressions.items()
        }
    return out


def _sensitive_variables(module: Mapping[str, Any]) -> set[str]:
    variables = module.get("variables")
    if not isinstance(variables, Mapping):
        return set()
    return {n for n, v in variables.items() if isinstance(v, Mapping) and v.get("sensitive")}
