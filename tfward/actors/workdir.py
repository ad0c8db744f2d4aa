"""Run directories: configuration snapshots, generated files, and init reuse.

A run plans and applies exactly the code that was snapshotted when it started: the workspace's
source (or a generated `main.tf.json` for module workspaces) becomes a deterministic tar.gz
whose sha256 is its address. The run directory `<data_dir>/runs/<run_id>/` is that archive
unpacked, plus `tfward.auto.tfvars.json`, a generated CLI config, and the current state.

`terraform init` is expensive and, on a shared plugin cache, not safe to run concurrently
(docs/architecture.md §2). Its result (`.terraform/` and the lock file) is kept per workspace under
a key that covers everything init depends on, and copied into the next run directory with the same
key. All functions here are synchronous file work; callers run them in a thread.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfward.config import TerraformConfig, WorkspaceConfig, thaw
from tfward.files import private_dir

log = logging.getLogger(__name__)

# Never part of a configuration snapshot: terraform's working data and local state.
_EXCLUDED_DIRS = {".terraform", ".git"}
_EXCLUDED_SUFFIXES = (".tfstate", ".tfstate.backup", ".tfplan")
TFVARS = "tfward.auto.tfvars.json"
CLI_CONFIG = ".tfward.tfrc"
PLAN_FILE = "tfward.tfplan"
STATE_FILE = "terraform.tfstate"
INIT_MARKER = ".terraform/tfward-init.json"
# Terraform's output files and exit codes (actors/terraform.py): kept while the run directory is.
OUTPUT_DIR = ".tfward"


@dataclass(frozen=True, slots=True)
class Snapshot:
    archive: bytes
    sha256: str
    file_count: int


def snapshot(ws: WorkspaceConfig) -> Snapshot:
    """A deterministic tar.gz of the workspace's configuration: same files, same bytes."""
    files = _module_files(ws) if ws.module is not None else _source_files(ws)
    buf = io.BytesIO()
    # mtime=0 and fixed owners make the archive, and so its sha256, depend on content only.
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    return Snapshot(archive, hashlib.sha256(archive).hexdigest(), len(files))


def _source_files(ws: WorkspaceConfig) -> list[tuple[str, bytes, int]]:
    assert ws.source is not None
    return _tree_files(ws.source)


def _tree_files(root: Path, prefix: str = "") -> list[tuple[str, bytes, int]]:
    found: list[tuple[str, bytes, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)
        for filename in sorted(filenames):
            if filename.endswith(_EXCLUDED_SUFFIXES) or filename == TFVARS:
                continue
            path = Path(dirpath, filename)
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            found.append((prefix + path.relative_to(root).as_posix(), path.read_bytes(), mode))
    return found


LOCAL_MODULE_DIR = "module"


def _module_files(ws: WorkspaceConfig) -> list[tuple[str, bytes, int]]:
    """`main.tf.json` calling the module with the workspace's inputs. A local module's code is
    copied into the snapshot (under `module/`) so the snapshot alone is the configuration.

    A sensitive input is not written here: the snapshot is stored and served (run tasks, diffs).
    It becomes a root variable declared `sensitive`, whose value `write_inputs` puts in the
    tfvars file; Terraform then masks it, and everything derived from it, in its own output.
    Terraform refuses a root output holding a sensitive value unless it is marked sensitive, so
    the module's outputs are then one sensitive output."""
    assert ws.module is not None
    files: list[tuple[str, bytes, int]] = []
    source = ws.module.source
    if os.path.isabs(source):
        files = _tree_files(Path(source), prefix=f"{LOCAL_MODULE_DIR}/")
        source = f"./{LOCAL_MODULE_DIR}"
    secret = sorted(sensitive_inputs(ws))
    block: dict[str, object] = {"source": source, **thaw(ws.inputs)}
    block.update({name: f"${{var.{name}}}" for name in secret})
    if ws.module.version:
        block["version"] = ws.module.version
    output: dict[str, object] = {"value": "${module.main}"}
    doc: dict[str, object] = {"module": {"main": block}, "output": {"main": output}}
    if secret:
        output["sensitive"] = True
        doc["variable"] = {name: {"sensitive": True} for name in secret}
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return [("main.tf.json", text.encode(), 0o644), *files]


def sensitive_inputs(ws: WorkspaceConfig) -> dict[str, Any]:
    """The module inputs the workspace marks sensitive (listed, or given as references)."""
    return {name: thaw(value) for name, value in ws.inputs.items() if name in ws.sensitive}


def unpack(archive: bytes, target: Path) -> None:
    """The snapshot into the directory `target` (which may hold the output files of the run's
    terraform commands so far): 0700, its files only the owner's (the run directory also gets
    the tfvars, the state and the plan)."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.chmod(0o700)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(target, filter=_private_member)


def _private_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    member = tarfile.data_filter(member, dest)
    return member if member.mode is None else member.replace(mode=member.mode & 0o700)


def make_private(root: Path) -> None:
    """Strip group and other bits below `root`: terraform writes some files 0644 whatever the
    umask (`.terraform.lock.hcl`), and a copy keeps them (docs/architecture.md §9)."""
    for dirpath, _, filenames in os.walk(root):
        for path in [Path(dirpath), *(Path(dirpath, name) for name in filenames)]:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & 0o077:
                path.chmod(stat.S_IMODE(mode) & 0o700)


DEV_MIRROR_VERSION = "0.0.1"


def cli_config_text(tf: TerraformConfig, dev_mirror: Path) -> str:
    """The CLI config terraform runs with: plugin cache, dev overrides, the user's own file.

    Terraform 1.0's `init` still looks a dev-overridden provider up in its registry (and fails
    offline), so the overridden providers are also offered from a local filesystem mirror
    (`build_dev_mirror`) that points at the same executables; plan and apply use the override."""
    lines = [
        f"plugin_cache_dir = {json.dumps(str(tf.plugin_cache_dir))}",
        "disable_checkpoint = true",
    ]
    if tf.dev_overrides:
        sources = sorted(tf.dev_overrides)
        lines.append("provider_installation {\n  dev_overrides {")
        lines += [
            f"    {json.dumps(src)} = {json.dumps(str(tf.dev_overrides[src]))}" for src in sources
        ]
        lines.append("  }")
        lines.append(
            f"  filesystem_mirror {{\n    path = {json.dumps(str(dev_mirror))}\n"
            f"    include = {json.dumps(sources)}\n  }}"
        )
        lines.append(f"  direct {{\n    exclude = {json.dumps(sources)}\n  }}\n}}")
    if tf.cli_config_file is not None:
        lines.append(f"# from {tf.cli_config_file}\n" + tf.cli_config_file.read_text())
    return "\n".join(lines) + "\n"


def build_dev_mirror(tf: TerraformConfig, dev_mirror: Path) -> None:
    """Lay out `<mirror>/<host>/<ns>/<type>/<version>/<os_arch>/terraform-provider-<type>` as a
    symlink to each dev-overridden provider's executable (see `cli_config_text`)."""
    for source, directory in tf.dev_overrides.items():
        host, namespace, ptype = _split_source(source)
        target = dev_mirror / host / namespace / ptype / DEV_MIRROR_VERSION / "linux_amd64"
        private_dir(target)
        link = target / f"terraform-provider-{ptype}_v{DEV_MIRROR_VERSION}"
        executable = Path(directory) / f"terraform-provider-{ptype}"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(executable)


def _split_source(source: str) -> tuple[str, str, str]:
    parts = source.split("/")
    if len(parts) == 2:
        return "registry.terraform.io", parts[0], parts[1]
    return parts[0], parts[1], parts[2]


def write_inputs(
    run_dir: Path, ws: WorkspaceConfig, cli_config: str, overrides: Mapping[str, Any] | None = None
) -> None:
    """The tfvars file and the CLI config. `overrides` (a release's variables) replace the
    workspace's variables of the same name; sensitive module inputs are root variables (see
    `_module_files`). The tfvars file may hold secrets, so only the daemon's user reads it."""
    values = {**thaw(ws.vars), **thaw(overrides or {}), **sensitive_inputs(ws)}
    text = json.dumps(values, indent=2, sort_keys=True) + "\n"
    write_private(run_dir / TFVARS, text.encode())
    # The operator's CLI config may hold credentials (registry tokens): private as well.
    write_private(run_dir / CLI_CONFIG, cli_config.encode())


def terraform_env(ws: WorkspaceConfig, cli_config: Path) -> dict[str, str]:
    """The environment terraform runs with: the daemon's, terraform's automation settings, the
    CLI config file `cli_config`, then the workspace's `env`."""
    env = dict(os.environ)
    env.update(
        TF_IN_AUTOMATION="1",
        TF_INPUT="0",
        CHECKPOINT_DISABLE="1",
        TF_CLI_CONFIG_FILE=str(cli_config),
    )
    env.update(ws.env)
    return env


def write_private(path: Path, data: bytes) -> None:
    """Write `path`, readable by the daemon's user alone. No fsync: what a run directory holds
    is a working copy of what the database keeps (a state, a plan), or made again from it
    (docs/architecture.md §3), so a power loss costs nothing that recovery cannot redo."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as fh:
        fh.write(data)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write `path` (0600) durably: through a temporary file, fsync and a rename (a state
    backup: it may be the only copy of a state the database refused)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def init_key(config_sha: str, cli_config: str, binary: str) -> str:
    """What `terraform init` depends on: the configuration, the CLI config, the binary."""
    found = os.stat(shutil.which(binary) or binary)
    parts = [config_sha, cli_config, binary, str(found.st_size), str(found.st_mtime_ns)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def restore_init(cache_root: Path, key: str, run_dir: Path) -> bool:
    """Copy a kept init into `run_dir`. Returns False when there is none for `key`."""
    kept = cache_root / key
    if not has_init(cache_root, key):
        return False
    shutil.copytree(kept / ".terraform", run_dir / ".terraform", symlinks=True)
    lock = kept / ".terraform.lock.hcl"
    if lock.is_file():
        shutil.copy2(lock, run_dir / ".terraform.lock.hcl")
    return True


def has_init(cache_root: Path, key: str) -> bool:
    """Whether an init is kept for `key` (`cache_root / key`, complete: it has its marker)."""
    return (cache_root / key / INIT_MARKER).is_file()


def keep_init(cache_root: Path, key: str, run_dir: Path) -> None:
    """Keep `run_dir`'s init for later runs. Written aside and renamed, so a crash never leaves
    a half-copied init that looks complete."""
    # A configuration with no providers or modules gets no .terraform from init.
    (run_dir / ".terraform").mkdir(mode=0o700, exist_ok=True)
    write_private(run_dir / INIT_MARKER, (json.dumps({"key": key}) + "\n").encode())
    final = cache_root / key
    if final.exists():
        return
    tmp = cache_root / f".{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    private_dir(tmp)
    shutil.copytree(
        run_dir / ".terraform",
        tmp / ".terraform",
        symlinks=True,
        ignore=shutil.ignore_patterns("terraform.tfstate"),
    )
    lock = run_dir / ".terraform.lock.hcl"
    if lock.is_file():
        shutil.copy2(lock, tmp / ".terraform.lock.hcl")
    make_private(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another run kept the same init first


def clear(path: Path, *, keep: str) -> None:
    """Empty the directory `path` (if it exists) but for its entry `keep`."""
    if not path.is_dir():
        return
    for entry in path.iterdir():
        if entry.name == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise OSError(f"could not remove {path}")
