"""How a Compose file is refused: every problem at the key (`loc`) that causes it; and what
Berth accepts but warns about (an ignored key, an unset variable taken as empty).

`Problems` is the one collector every step receives (load, interpolate, check, map): a step
calls `problems.add` for what refuses the file and `problems.warn` for what it accepts with a
warning; the warnings reach the answer of the request (stack create, update, dry run) in the
order they were found, each as `<loc>: <message>`.
"""

from __future__ import annotations

MAX_WARNINGS = 100


class ComposeError(Exception):
    """The Compose file cannot become a Berth stack; `errors` says where and why."""

    def __init__(self, errors: list[dict[str, str]], warnings: list[str] | None = None) -> None:
        self.errors = errors
        self.warnings = warnings or []  # found before the refusal; they may explain it
        super().__init__("; ".join(f"{error['loc']}: {error['msg']}" for error in errors[:5]))


class Problems:
    """The errors found so far: parsing goes on after one to report as many as it can."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []
        self.warnings: list[str] = []

    def add(self, loc: str, msg: str) -> None:
        self.errors.append({"loc": loc, "msg": msg})

    def warn(self, loc: str, msg: str) -> None:
        """Accepted, but the user should know (as `docker compose` prints a WARN line)."""
        warning = f"{loc}: {msg}"
        # Said once, however many steps notice it; a file of thousands of `x-*` keys (aliases
        # expanded) still answers a short list.
        if warning not in self.warnings and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(warning)

    def unsupported(self, loc: str, feature: str, reason: str = "") -> None:
        self.add(loc, f"'{feature}' is not supported by Berth" + (f" ({reason})" if reason else ""))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ComposeError(self.errors, self.warnings)


def at(loc: str, key: str | int) -> str:
    """The location of `key` inside `loc`: `compose.services.web`, `...ports[0]`."""
    return f"{loc}[{key}]" if isinstance(key, int) else f"{loc}.{key}"
