"""Step 2c, for a project directory: top-level `secrets` and `configs` with `file:` become
secrets that Berth stores (encrypted) for the stack, delivered as files as any Berth secret is.

Each is named `<stack>.<key>.<content hash>` (or `<stack>.<hash>` when that is too long): the
same content is the same secret, and a changed file is a new name in the spec of exactly the
services that use it, which then roll. A config is delivered as Compose delivers it: at
`/<config key>` unless its `target` says otherwise.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from app.stacks.compose.errors import Problems, at
from app.stacks.compose.extend import relative_to

_SECRET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
MAX_FILE_BYTES = 500 * 1024  # as a secret (app.secrets.schemas.MAX_SECRET_BYTES)
_CONFIG_PREFIX = "config."  # configs join the secrets under keys of their own


def stored_name(project: str, key: str, value: str) -> str:
    digest = hashlib.sha256(f"{key}\0{value}".encode()).hexdigest()
    name = f"{project}.{key}.{digest[:12]}"
    return name if _SECRET_NAME.match(name) else f"{project}.{digest[:20]}"


def file_secrets(
    document: dict[str, Any],
    *,
    project: str,
    folder: str,
    files: Mapping[str, str],
    problems: Problems,
) -> dict[str, str]:
    """Rewrite `document` so that its file secrets and configs name the stored secrets; the
    values to store, by name."""
    stored: dict[str, str] = {}

    def store(key: str, declaration: dict[str, Any], loc: str) -> dict[str, str]:
        name, value = _stored(key, declaration, loc, project, folder, files, problems)
        if value is not None:
            stored[name] = value
        return {"name": name}

    own: set[str] = set()  # the secret keys stored here
    secrets = document.get("secrets")
    if isinstance(secrets, dict):
        for key, declaration in secrets.items():
            if isinstance(declaration, dict) and "file" in declaration:
                secrets[key] = store(key, declaration, at("compose.secrets", key))
                own.add(key)
    configs = document.pop("configs", None)
    if isinstance(configs, dict):
        moved = document.setdefault("secrets", {})
        for key, declaration in configs.items():
            loc = at("compose.configs", key)
            if not isinstance(declaration, dict) or "file" not in declaration:
                problems.unsupported(loc, "a config without `file:`", "only file configs are")
                continue
            moved[_CONFIG_PREFIX + key] = store(key, declaration, loc)
    for service in (document.get("services") or {}).values():
        if not isinstance(service, dict):
            continue
        references = [_secret_reference(item, own) for item in service.get("secrets") or []]
        references += [_config_reference(item) for item in service.pop("configs", None) or []]
        if references:
            service["secrets"] = references
    return stored


def _stored(
    key: str,
    declaration: dict[str, Any],
    loc: str,
    project: str,
    folder: str,
    files: Mapping[str, str],
    problems: Problems,
) -> tuple[str, str | None]:
    """The stored secret's name and value (None, after a problem)."""
    for option in sorted(set(declaration) - {"file", "name"}):
        problems.unsupported(at(loc, option), option, "with `file:`")
    path = relative_to(folder, str(declaration["file"]))
    file_loc = at(loc, "file")
    if path is None:
        problems.add(file_loc, f"'{declaration['file']}' is outside the project")
        return key, None
    if path not in files:
        problems.add(file_loc, f"'{path}' is not a text file of the project (at most 1 MiB)")
        return key, None
    value = files[path]
    if len(value.encode()) > MAX_FILE_BYTES:
        problems.add(file_loc, f"'{path}' is larger than {MAX_FILE_BYTES} bytes")
        return key, None
    return stored_name(project, key, value), value


def _secret_reference(item: Any, own: set[str]) -> Any:
    """A reference to a stored secret, at Compose's path /run/secrets/<key> (its stored name
    is not the key)."""
    if isinstance(item, str) and item in own:
        return {"source": item, "target": item}
    if isinstance(item, dict) and item.get("source") in own and "target" not in item:
        return {**item, "target": item["source"]}
    return item


def _config_reference(item: Any) -> Any:
    """A service's config reference as a secret reference, at Compose's default path."""
    if isinstance(item, str):
        return {"source": _CONFIG_PREFIX + item, "target": f"/{item}"}
    if isinstance(item, dict) and isinstance(item.get("source"), str):
        return {
            **item,
            "source": _CONFIG_PREFIX + item["source"],
            "target": item.get("target", f"/{item['source']}"),
        }
    return item
