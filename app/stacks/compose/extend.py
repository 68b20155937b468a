"""Step 2b: `include` and `extends`, which bring in Compose definitions from other files of the
project (or, for `extends`, from the same file).

Each other file is loaded and interpolated as the main one is (steps 1 and 2), and the paths
it uses (`build` contexts, `env_file`, relative bind mounts) are rewritten to stay relative to
the project directory, as Compose resolves them relative to the file that names them. A service that
`extends` another is the other's definition with its own merged over it, by Compose's merge
rules: mappings key by key, `volumes` by target, the sequences Compose appends appended, and
every other value replaced.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.stacks.compose.errors import Problems, at

# Files are read as the main file is: `text -> mapping`, with its interpolation.
Loader = Callable[[str, str], dict[str, Any] | None]

_MAX_EXTENDS_DEPTH = 10  # deeper chains than this are a mistake (or a cycle)
_MAX_INCLUDED_FILES = 20
# Compose appends these sequences rather than replacing them (compose-spec merge rules).
_APPENDED = frozenset(
    {
        "cap_add", "cap_drop", "configs", "devices", "dns", "dns_opt", "dns_search",
        "env_file", "expose", "extra_hosts", "external_links", "group_add", "links", "ports",
        "secrets", "security_opt", "volumes_from", "profiles",
    }
)  # fmt: skip
_KEYED_LISTS = frozenset({"environment", "labels", "sysctls", "annotations"})


def resolved(
    document: dict[str, Any],
    *,
    folder: str,
    files: Mapping[str, str],
    load: Loader,
    problems: Problems,
) -> dict[str, Any]:
    """`document`, the file in project folder `folder` (`files` are by path from the project
    directory), with its `include`s merged in and every `extends` resolved."""
    project = _Files(files, load, problems)
    included = _included(document, folder, project)
    services = included.get("services")
    if isinstance(services, dict):
        # Each service's paths move once, from the folder of the file that defines it.
        included["services"] = {
            name: _extended(
                name,
                project.folders.get(name, folder),
                services,
                at("compose.services", name),
                project,
                (),
            )
            for name in services
        }
    return included


@dataclass
class _Files:
    """The project's files, each other Compose file loaded once."""

    files: Mapping[str, str]
    load: Loader
    problems: Problems
    loaded: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)  # an included service's file's folder

    def compose_file(self, path: str, loc: str) -> dict[str, Any] | None:
        if path not in self.loaded:
            text = self.files.get(path)
            if text is None:
                self.problems.add(
                    loc, f"the file '{path}' is not in the project (upload the project directory)"
                )
                self.loaded[path] = None
            else:
                self.loaded[path] = self.load(text, f"{loc}({path})")
        return self.loaded[path]


def relative_to(folder: str, path: str) -> str | None:
    """`path`, written in a file of project folder `folder`, as a path from the project
    directory; None when it leaves the project (absolute, or `..` above its root)."""
    if path.startswith(("/", "~")):
        return None
    joined = posixpath.normpath(posixpath.join(folder, path))
    if joined == ".." or joined.startswith("../"):
        return None
    return joined


def _included(document: dict[str, Any], folder: str, project: _Files) -> dict[str, Any]:
    problems = project.problems
    entries = document.pop("include", None)
    if entries is None:
        return document
    if not isinstance(entries, list):
        problems.add("compose.include", "include is a list of files")
        return document
    if len(entries) > _MAX_INCLUDED_FILES:
        problems.add("compose.include", f"more than {_MAX_INCLUDED_FILES} included files")
        return document
    for index, entry in enumerate(entries):
        loc = at("compose.include", index)
        paths = entry if isinstance(entry, (str, list)) else entry.get("path")
        if isinstance(entry, dict):
            for key in set(entry) - {"path"}:
                problems.unsupported(at(loc, key), f"include {key}")
        for path in [paths] if isinstance(paths, str) else paths or []:
            where = relative_to(folder, str(path))
            if where is None:
                problems.add(loc, f"'{path}' is outside the project")
                continue
            other = project.compose_file(where, loc)
            if other is None:
                continue
            if "include" in other:
                problems.unsupported(at(loc, "include"), "include inside an included file")
            _merge_included(document, other, posixpath.dirname(where), loc, project)
    return document


def _merge_included(
    document: dict[str, Any], other: dict[str, Any], folder: str, loc: str, project: _Files
) -> None:
    """Compose refuses an included resource that the including file declares too. A service's
    paths move with its `extends` (in `resolved`), from `folder`."""
    problems = project.problems
    for section in ("services", "networks", "volumes", "secrets", "configs"):
        theirs = other.get(section)
        if not isinstance(theirs, dict):
            continue
        ours = document.setdefault(section, {})
        for name, definition in theirs.items():
            if name in ours:
                problems.add(loc, f"{section[:-1]} '{name}' is defined by the including file too")
                continue
            if section == "services":
                project.folders[name] = folder
                ours[name] = definition
            else:
                ours[name] = _relocated_file(definition, folder)


def _relocated_file(definition: Any, folder: str) -> Any:
    """A secret's or config's `file`, from the project directory."""
    if isinstance(definition, dict) and isinstance(definition.get("file"), str) and folder:
        return {**definition, "file": relative_to(folder, definition["file"]) or definition["file"]}
    return definition


def _relocated(definition: Any, folder: str) -> Any:
    """A service of a file in project folder `folder`, its relative paths from the project
    directory (a path that leaves the project is kept as written: later steps refuse it)."""
    if not folder or not isinstance(definition, dict):
        return definition
    moved = dict(definition)
    build = moved.get("build")
    if isinstance(build, str):
        moved["build"] = relative_to(folder, build) or build
    elif isinstance(build, dict):
        context = str(build.get("context", "."))
        moved["build"] = {**build, "context": relative_to(folder, context) or context}
    volumes = moved.get("volumes")
    if isinstance(volumes, list):
        moved["volumes"] = [_relocated_volume(item, folder) for item in volumes]
    env_file = moved.get("env_file")
    if isinstance(env_file, str):
        moved["env_file"] = relative_to(folder, env_file) or env_file
    elif isinstance(env_file, list):
        moved["env_file"] = [_relocated_env_file(item, folder) for item in env_file]
    return moved


def _relocated_volume(item: Any, folder: str) -> Any:
    """A relative bind mount's source from the project directory, still written as relative
    (`./`), which is how the mapping tells a bind from a named volume."""
    if isinstance(item, str) and item.startswith("."):
        written, colon, rest = item.partition(":")
        return f"{_relocated_source(written, folder)}{colon}{rest}"
    if not isinstance(item, dict) or item.get("type") != "bind":
        return item
    source = item.get("source")
    if isinstance(source, str) and source and not source.startswith(("/", "~")):
        return {**item, "source": _relocated_source(source, folder)}
    return item


def _relocated_source(source: str, folder: str) -> str:
    relative = relative_to(folder, source)
    return source if relative is None else f"./{relative}"


def _relocated_env_file(item: Any, folder: str) -> Any:
    if isinstance(item, str):
        return relative_to(folder, item) or item
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return {**item, "path": relative_to(folder, item["path"]) or item["path"]}
    return item


def _extended(
    name: str,
    folder: str,
    services: dict[str, Any],
    loc: str,
    project: _Files,
    seen: tuple[tuple[str, str], ...],
) -> Any:
    """Service `name` of the file in project folder `folder` whose services are `services`,
    with its `extends` resolved and its paths from the project directory."""
    problems = project.problems
    definition = services.get(name)
    if not isinstance(definition, dict) or "extends" not in definition:
        return _relocated(definition, folder)
    own = dict(definition)
    extends = own.pop("extends")
    extends_loc = at(loc, "extends")
    if isinstance(extends, str):
        extends = {"service": extends}
    if not isinstance(extends, dict) or not isinstance(extends.get("service"), str):
        problems.add(extends_loc, "extends names a `service` (and optionally a `file`)")
        return own
    base_name = extends["service"]
    base_folder, base_services = folder, services
    if "file" in extends:
        path = relative_to(folder, str(extends["file"]))
        if path is None:
            problems.add(at(extends_loc, "file"), f"'{extends['file']}' is outside the project")
            return own
        other = project.compose_file(path, extends_loc)
        if other is None:
            return own
        base_folder = posixpath.dirname(path)
        found = other.get("services")
        base_services = found if isinstance(found, dict) else {}
    identity = (base_folder + "/" + str(extends.get("file", "")), base_name)
    if identity in seen or len(seen) >= _MAX_EXTENDS_DEPTH:
        problems.add(extends_loc, f"extends forms a cycle (or a chain over {_MAX_EXTENDS_DEPTH})")
        return own
    if base_name not in base_services:
        problems.add(at(extends_loc, "service"), f"service '{base_name}' is not defined there")
        return own
    # The base's problems are reported at this service's `extends`.
    base = _extended(base_name, base_folder, base_services, loc, project, (*seen, identity))
    if not isinstance(base, dict):
        return own
    return merged(base, _relocated(own, folder))


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base` by Compose's merge rules for a service."""
    result = dict(base)
    for key, value in override.items():
        old = result.get(key)
        if key in _KEYED_LISTS and old is not None:
            result[key] = {**_as_mapping(old), **_as_mapping(value)}
        elif key == "volumes" and isinstance(old, list) and isinstance(value, list):
            by_target = {_volume_target(item): item for item in old}
            by_target.update({_volume_target(item): item for item in value})
            result[key] = list(by_target.values())
        elif key in _APPENDED and isinstance(old, list) and isinstance(value, list):
            result[key] = [*old, *(item for item in value if item not in old)]
        elif isinstance(old, dict) and isinstance(value, dict):
            result[key] = merged(old, value)
        else:
            result[key] = value
    return result


def _as_mapping(value: Any) -> dict[str, Any]:
    """A Compose list-or-mapping (`["A=1", "B"]` or `{A: 1, B: null}`) as a mapping."""
    if isinstance(value, dict):
        return value
    mapping: dict[str, Any] = {}
    for item in value if isinstance(value, list) else []:
        key, equals, text = str(item).partition("=")
        mapping[key] = text if equals else None
    return mapping


def _volume_target(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("target", ""))
    parts = str(item).split(":")
    return parts[1] if len(parts) > 1 else parts[0]
