"""Docker image references: parse, normalise, match against allowed registries, find base images.

The grammar is the one of github.com/distribution/reference, normalised as the docker CLI does
(`busybox` is `docker.io/library/busybox`). Pure logic: nothing here talks to Docker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.core.interpolation import (
    DOCKERFILE,
    VARIABLE_NAME,
    BadSubstitution,
    UnsetVariable,
    substitute,
)

DOCKER_HUB = "docker.io"
OFFICIAL_PREFIX = "library/"
NAME_MAX = 255
# Names Docker Hub is known by; credentials and allow-lists for any of them mean Docker Hub.
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_REPOSITORY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST_ALGORITHM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*")
# go-digest accepts only these, each with lowercase hex of a fixed length.
_DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_IMAGE_ID = re.compile(r"[a-f0-9]{64}")
_STAGE_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_.-]*")
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*")


class InvalidReference(ValueError):
    """An image reference (or a Dockerfile FROM line) that Docker would not accept."""


@dataclass(frozen=True)
class ImageReference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository as the engine takes it for a pull: `busybox`, `10.0.0.1:5000/team/app`."""
        if self.registry != DOCKER_HUB:
            return f"{self.registry}/{self.repository}"
        official = self.repository.removeprefix(OFFICIAL_PREFIX)
        return official if "/" not in official else self.repository

    @property
    def tag_or_default(self) -> str | None:
        """The tag to pull: the tag, else `latest` — or None when the digest alone names it."""
        if self.tag is not None:
            return self.tag
        return None if self.digest is not None else "latest"

    @property
    def registry_host(self) -> str:
        """host[:port] that stored credentials and allow-lists are keyed by; `docker.io` for Hub."""
        return normalise_registry_host(self.registry)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def normalise_registry_host(host: str) -> str:
    """`https://Index.Docker.io/v1/` -> `docker.io`; `10.0.0.1:5000` stays as it is."""
    value = host.strip().lower()
    for scheme in ("https://", "http://"):
        value = value.removeprefix(scheme)
    value = value.split("/", 1)[0]
    return DOCKER_HUB if value in _HUB_ALIASES else value


# The registry part of the images Berth builds for stacks. They exist only on the host that
# built them and are never pulled, so the registry allow-list has nothing to say about them.
LOCAL_BUILD_REGISTRY = "berth.local"


def recorded_digest(ref: ImageReference, details: Mapping[str, Any]) -> str | None:
    """What a deploy records for `ref` from the engine's inspection of the image it pulled:
    `name@sha256:...` from its RepoDigests (the registry's name for those exact bits, which
    every host can pull), or, for an image Berth built (never pushed, so no registry digest),
    its image id. None when the image has neither (a tag only ever loaded, never pulled)."""
    if ref.registry_host == LOCAL_BUILD_REGISTRY:
        return str(details["Id"]) if details.get("Id") else None
    for name in details.get("RepoDigests") or []:
        repository, _, digest = str(name).partition("@")
        try:
            if digest and parse_reference(repository).name == ref.name:
                return f"{ref.name}@{digest}"
        except InvalidReference:
            continue
    return None


def registry_allowed(ref: ImageReference, allowed: Sequence[str]) -> bool:
    """Whether `ref` comes from one of the `allowed` registry hosts; an empty list allows all."""
    if not allowed or ref.registry_host == LOCAL_BUILD_REGISTRY:
        return True
    host = ref.registry_host
    return any(normalise_registry_host(entry) == host for entry in allowed)


def tag_source_names(source: str, names: Sequence[str] | None) -> list[ImageReference]:
    """The names that say where an image to be tagged came from. `source` names it (a tag, a
    digest or an image id); `names` are the image's own tags and digests, None when unknown.
    A source that is one of its names speaks for itself; an id hides where the image came
    from, so every name the image has counts."""
    known: list[ImageReference] = []
    for name in names or []:
        try:
            known.append(parse_reference(name))
        except InvalidReference:
            continue  # `<none>:<none>`, which names no registry
    if _IMAGE_ID.fullmatch(source.removeprefix("sha256:")):
        return known  # `sha256:<id>` would parse as a tag of `sha256`, but the engine reads an id
    try:
        named = parse_reference(source)
    except InvalidReference:
        return known
    if names is None or _pinned(named) in {_pinned(ref) for ref in known}:
        return [named]
    return known


def _pinned(ref: ImageReference) -> ImageReference:
    """`busybox` as the engine lists it: `busybox:latest`."""
    return ImageReference(ref.registry, ref.repository, ref.tag_or_default, ref.digest)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def parse_reference(text: str) -> ImageReference:
    """Parse `[registry/]repository[:tag][@digest]` into its normalised parts."""
    if not text:
        raise InvalidReference("image reference is empty")
    fail = f"invalid image reference {_shown(text)}"
    if any(char.isspace() for char in text):
        raise InvalidReference(f"{fail}: it contains whitespace")
    if text.count("@") > 1:
        raise InvalidReference(f"{fail}: more than one '@'")
    name, at, digest = text.partition("@")
    colon = name.rfind(":")
    tag: str | None = None
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    if not name:
        raise InvalidReference(f"{fail}: the repository name is empty")
    if len(name) > NAME_MAX:
        raise InvalidReference(
            f"{fail}: the name is {len(name)} characters long; the limit is {NAME_MAX}"
        )

    registry, slash, repository = name.partition("/")
    if not slash or not (
        "." in registry or ":" in registry or registry == "localhost"
    ):  # No registry part: the whole name is a Docker Hub repository.
        registry, repository = DOCKER_HUB, name
    elif not _DOMAIN.fullmatch(registry):
        raise InvalidReference(f"{fail}: {registry!r} is not a valid registry host[:port]")
    elif registry.lower() in _HUB_ALIASES:
        registry = DOCKER_HUB
    _check_repository(repository, fail)
    if registry == DOCKER_HUB:
        if not slash and _IMAGE_ID.fullmatch(repository):
            raise InvalidReference(
                f"{fail}: a 64-character hex string is an image ID, not a repository name"
            )
        if "/" not in repository:
            repository = OFFICIAL_PREFIX + repository

    if tag is not None:
        _check_tag(tag, fail)
    if at:
        _check_digest(digest, fail)
    return ImageReference(registry, repository, tag, digest if at else None)


def _check_repository(repository: str, fail: str) -> None:
    if not repository:
        raise InvalidReference(f"{fail}: the repository name is empty")
    if repository != repository.lower():
        raise InvalidReference(f"{fail}: repository name {repository!r} must be lowercase")
    for component in repository.split("/"):
        if not component:
            raise InvalidReference(f"{fail}: empty path component in {repository!r}")
        if _PATH_COMPONENT.fullmatch(component):
            continue
        bad = sorted(set(component) - _REPOSITORY_CHARS)
        if bad:
            chars = ", ".join(repr(char) for char in bad)
            raise InvalidReference(f"{fail}: invalid character {chars} in {component!r}")
        raise InvalidReference(
            f"{fail}: path component {component!r} must start and end with a letter or digit "
            "and separate them with one '.', one or two '_', or dashes"
        )


def _check_tag(tag: str, fail: str) -> None:
    if not tag:
        raise InvalidReference(f"{fail}: the tag after ':' is empty")
    if len(tag) > 128:
        raise InvalidReference(f"{fail}: the tag is {len(tag)} characters long; the limit is 128")
    if not _TAG.fullmatch(tag):
        raise InvalidReference(
            f"{fail}: tag {tag!r} must start with a letter, digit or '_' "
            "and contain only letters, digits, '_', '.' and '-'"
        )


def _check_digest(digest: str, fail: str) -> None:
    algorithm, colon, hex_part = digest.partition(":")
    if not colon or not _DIGEST_ALGORITHM.fullmatch(algorithm):
        raise InvalidReference(
            f"{fail}: digest {digest!r} must be algorithm:hex, like sha256:<64 hex digits>"
        )
    length = _DIGEST_HEX_LENGTH.get(algorithm)
    if length is None:
        known = ", ".join(_DIGEST_HEX_LENGTH)
        raise InvalidReference(
            f"{fail}: unsupported digest algorithm {algorithm!r} (use one of {known})"
        )
    if len(hex_part) != length:
        raise InvalidReference(
            f"{fail}: a {algorithm} digest needs {length} hex digits, got {len(hex_part)}"
        )
    if not re.fullmatch(r"[a-f0-9]+", hex_part):
        raise InvalidReference(f"{fail}: a {algorithm} digest takes only lowercase hex digits")


# --- Dockerfiles ------------------------------------------------------------------------------


def dockerfile_images(dockerfile: str, build_args: Mapping[str, str]) -> list[ImageReference]:
    """Every image from a registry that building the Dockerfile makes the engine pull: the
    frontend that parses it (`# syntax=`, or the BUILDKIT_SYNTAX build argument), then the
    images its stages use (dockerfile_base_images). Each once, in order."""
    images: list[ImageReference] = []
    frontends = [value for name, value in _directives(dockerfile) if name == "syntax"]
    if "BUILDKIT_SYNTAX" in build_args:
        frontends.append(build_args["BUILDKIT_SYNTAX"])
    for frontend in frontends:
        try:
            image = parse_reference(frontend)
        except InvalidReference as exc:
            raise InvalidReference(f"Dockerfile syntax (frontend image): {exc}") from None
        if image not in images:
            images.append(image)
    for image in dockerfile_base_images(dockerfile, build_args):
        if image not in images:
            images.append(image)
    return images


def dockerfile_base_images(dockerfile: str, build_args: Mapping[str, str]) -> list[ImageReference]:
    """The images a Dockerfile's stages use that come from a registry, in order, each once:
    what they build FROM, and what `COPY --from=`, `ADD --from=` and `RUN --mount=...,from=`
    name (also in ONBUILD, which runs them in every build FROM this image).

    `scratch` and earlier stages (`FROM builder` after `... AS builder`, or by index) are not
    external. ARGs declared before the first FROM are the only variables a FROM line sees, as in
    Docker; a build argument overrides a declared default and is ignored when no ARG declares
    it. The flags of an instruction see the stage's own ARGs (which inherit the global default
    when declared without one) and ENVs. Unlike Docker, a variable that is not set is an error
    rather than an empty string: an image the check cannot name is not built.
    """
    variables: dict[str, str | None] = {}
    stage_variables: dict[str, str | None] = {}
    stages: set[str] = set()
    images: list[ImageReference] = []
    seen_from = False
    escape = _escape_of(dockerfile)
    for line_no, line in _instructions(dockerfile, escape):
        keyword, rest = _keyword(line)
        if keyword == "ONBUILD":
            keyword, rest = _keyword(rest)
        found: list[ImageReference | None] = []
        try:
            if keyword == "ARG" and not seen_from:
                _declare_args(rest, variables, build_args, escape)
            elif keyword == "ARG":
                _declare_args(rest, stage_variables, build_args, escape, inherited=variables)
            elif keyword == "ENV":
                _declare_env(rest, stage_variables, escape)
            elif keyword == "FROM":
                seen_from = True
                found.append(_from_image(rest, variables, stages, escape))
                stage_variables = {}
            elif keyword in ("COPY", "ADD", "RUN"):
                found.extend(
                    parse_reference(source)
                    for source in _flag_sources(keyword, rest, stage_variables, escape)
                    # An earlier stage by name, or any stage by its index.
                    if source.lower() not in stages and not source.isdigit()
                )
            for image in found:
                if image is not None and image not in images:
                    images.append(image)
        except InvalidReference as exc:
            raise InvalidReference(f"Dockerfile line {line_no}: {exc}") from None
        except UnsetVariable as exc:
            where = "in the stage" if keyword != "FROM" and seen_from else "before the first FROM"
            raise InvalidReference(
                f"Dockerfile line {line_no}: variable {exc.name!r} is not set; declare it "
                f"with ARG {where} (with a default) or pass it as a build argument"
            ) from None
    if not seen_from:
        raise InvalidReference("the Dockerfile has no FROM instruction")
    return images


def _directives(dockerfile: str) -> Iterator[tuple[str, str]]:
    """(name in lowercase, value) of the parser directives at the top of the file."""
    for line in dockerfile.removeprefix("\ufeff").split("\n"):
        match = _DIRECTIVE.fullmatch(line.strip())
        if match is None:
            return
        yield match.group(1).lower(), match.group(2)


def _escape_of(dockerfile: str) -> str:
    """The escape character: `\\`, or what an `# escape=` parser directive at the top says."""
    for name, value in _directives(dockerfile):
        if name == "escape" and value in ("\\", "`"):
            return value
    return "\\"


def _keyword(line: str) -> tuple[str, str]:
    words = line.split(None, 1)
    return (words[0].upper(), words[1] if len(words) > 1 else "") if words else ("", "")


# One leading `--name[=value]` flag of an instruction; the value may hold quoted parts.
_FLAG = re.compile(r"""\s*--([A-Za-z][A-Za-z0-9-]*)(?:=((?:"[^"]*"|'[^']*'|[^\s"'])*))?""")


def _flag_sources(
    keyword: str, rest: str, variables: Mapping[str, str | None], escape: str
) -> Iterator[str]:
    """What the leading flags of a COPY, ADD or RUN line take content from: a stage or an
    image. Only the flags are read: the rest of a RUN line is shell, not Dockerfile words."""
    position = 0
    while (match := _FLAG.match(rest, position)) is not None:
        position = match.end()
        name, value = match.group(1).lower(), match.group(2) or ""
        if keyword != "RUN" and name == "from":
            yield _expand(value, variables, escape)
        elif keyword == "RUN" and name == "mount":
            # Only `from=` is expanded: another option's unset variable hides no image.
            if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            for option in value.split(","):
                key, _, source = option.partition("=")
                if key.strip().lower() == "from" and source:
                    yield _expand(source.strip(), variables, escape)


def _instructions(dockerfile: str, escape: str) -> Iterator[tuple[int, str]]:
    """Logical lines with the number of their first physical line: continuations joined, and
    comments, parser directives and blank lines dropped, as BuildKit's parser does.

    Heredoc bodies are not skipped: a builder without heredoc support would run a FROM line in
    one as an instruction, so the base-image check must see it too.
    """
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    start, parts = 0, list[str]()
    for number, raw in enumerate(dockerfile.removeprefix("\ufeff").split("\n"), start=1):
        line = raw.removesuffix("\r")
        if line.lstrip().startswith("#") or not line.strip():
            continue  # A comment or blank line, also inside a continuation.
        if not parts:
            start = number
        match = continuation.search(line)
        if match is not None:
            parts.append(line[: match.start()])
            continue
        parts.append(line)
        yield start, "".join(parts)
        parts = []
    if parts:  # The file ends inside a continuation.
        yield start, "".join(parts)


def _split_words(text: str, escape: str) -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes for `_expand`."""
    words: list[str] = []
    word: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(text):
        char = text[index]
        if char == escape and quote != "'" and index + 1 < len(text):
            word.append(text[index : index + 2])
            index += 2
            continue
        if quote is None and char.isspace():
            if word:
                words.append("".join(word))
                word = []
        else:
            if char in "'\"" and quote in (None, char):
                quote = None if quote == char else char
            word.append(char)
        index += 1
    if quote is not None:
        raise InvalidReference(f"unterminated {quote} quote in {text.strip()!r}")
    if word:
        words.append("".join(word))
    return words


def _expand(word: str, variables: Mapping[str, str | None], escape: str) -> str:
    """Shell-like expansion of one word: quotes and escapes here, `$` expressions in the
    Dockerfile dialect of the shared expander ($VAR, ${VAR}, ${VAR:-x}, ${VAR:+x})."""
    out: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(word):
        char = word[index]
        if quote == "'":
            if char == "'":
                quote = None
            else:
                out.append(char)
            index += 1
        elif char == escape and index + 1 < len(word):
            out.append(word[index + 1])
            index += 2
        elif char == '"' or (char == "'" and quote is None):
            quote = None if quote == char else char
            index += 1
        elif char == "$":
            try:
                value, index = substitute(
                    word,
                    index,
                    variables,
                    dialect=DOCKERFILE,
                    expand=lambda argument: _expand(argument, variables, escape),
                )
            except BadSubstitution as exc:
                raise InvalidReference(f"bad substitution {exc.source!r}") from None
            out.append(value)
        else:
            out.append(char)
            index += 1
    if quote is not None:
        raise InvalidReference(f"unterminated {quote} quote in {word!r}")
    return "".join(out)


def _declare_args(
    rest: str,
    variables: dict[str, str | None],
    build_args: Mapping[str, str],
    escape: str,
    inherited: Mapping[str, str | None] | None = None,
) -> None:
    """`inherited`: the global ARGs, whose value a stage's ARG without a default takes."""
    words = _split_words(rest, escape)
    if not words:
        raise InvalidReference("ARG needs a name: ARG NAME[=default]")
    for word in words:
        name, has_default, default = word.partition("=")
        if not VARIABLE_NAME.fullmatch(name):
            raise InvalidReference(f"ARG name {name!r} is not a valid variable name")
        if name in build_args:
            variables[name] = build_args[name]
        elif has_default:
            variables[name] = _expand(default, variables, escape)
        else:
            variables[name] = (inherited or {}).get(name)


def _declare_env(rest: str, variables: dict[str, str | None], escape: str) -> None:
    """`ENV A=1 B=2`, or the old `ENV NAME value with spaces`."""
    words = _split_words(rest, escape)
    if words and "=" not in words[0]:
        variables[words[0]] = _expand(" ".join(words[1:]), variables, escape)
        return
    for word in words:
        name, _, value = word.partition("=")
        variables[name] = _expand(value, variables, escape)


def _from_image(
    rest: str, variables: Mapping[str, str | None], stages: set[str], escape: str
) -> ImageReference | None:
    """The external image of one FROM line, or None for `scratch` or an earlier stage."""
    words = _split_words(rest, escape)
    while words and words[0].startswith("--"):
        flag = words.pop(0)
        if not flag.startswith("--platform="):
            raise InvalidReference(f"FROM does not take the flag {flag!r} (only --platform=...)")
    if len(words) == 3 and words[1].lower() == "as":
        if not _STAGE_NAME.fullmatch(words[2]):
            raise InvalidReference(
                f"stage name {words[2]!r} must start with a letter and contain only "
                "letters, digits, '_', '.' and '-'"
            )
        stage: str | None = words[2].lower()
    elif len(words) == 1:
        stage = None
    else:
        raise InvalidReference("expected FROM [--platform=<platform>] <image> [AS <name>]")
    base = _expand(words[0], variables, escape)
    image: ImageReference | None = None
    if not base:
        raise InvalidReference(f"the image {words[0]!r} of FROM expands to an empty name")
    if base != "scratch" and base.lower() not in stages:
        image = parse_reference(base)
    if stage is not None:
        stages.add(stage)
    return image
