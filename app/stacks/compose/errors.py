"""How a Compose file is refused: every problem at the key (`loc`) that causes it."""

from __future__ import annotations


class ComposeError(Exception):
    """The Compose file cannot become a Berth stack; `errors` says where and why."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{error['loc']}: {error['msg']}" for error in errors[:5]))


class Problems:
    """The errors found so far: parsing goes on after one to report as many as it can."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, loc: str, msg: str) -> None:
        self.errors.append({"loc": loc, "msg": msg})

    def unsupported(self, loc: str, feature: str, reason: str = "") -> None:
        self.add(loc, f"'{feature}' is not supported by Berth" + (f" ({reason})" if reason else ""))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ComposeError(self.errors)


def at(loc: str, key: str | int) -> str:
    """The location of `key` inside `loc`: `compose.services.web`, `...ports[0]`."""
    return f"{loc}[{key}]" if isinstance(key, int) else f"{loc}.{key}"
