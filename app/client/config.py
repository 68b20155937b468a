"""Where the client finds the server and its token: arguments, then BERTH_URL / BERTH_TOKEN,
then the login file `berth login` writes (`$XDG_CONFIG_HOME/berth/config.json`, by default
`~/.config/berth/config.json`, mode 0600, `{"url": ..., "token": ...}`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from app.client.errors import ConfigurationError


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "berth" / "config.json"


def load_login(path: Path | None = None) -> dict[str, str]:
    """The stored url and token ({} when there is no login file)."""
    path = path or config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the login file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"the login file {path} is not a JSON object")
    return {k: v for k, v in data.items() if k in ("url", "token") and isinstance(v, str)}


def save_login(url: str, token: str, path: Path | None = None) -> Path:
    """Store url and token for later runs, readable by the user only (0600 from the start:
    the token is never on disk with wider permissions, not even for a moment)."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token}, handle)
    temporary.replace(path)
    return path


def remove_login(path: Path | None = None) -> bool:
    """Forget the stored login; False when there was none."""
    try:
        (path or config_path()).unlink()
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class Connection:
    url: str
    # Never in a repr: a Connection printed or logged must not show the token.
    token: str = field(repr=False)


def resolve(url: str | None, token: str | None) -> Connection:
    """The server and token from the arguments, else the environment, else the login file."""
    url = url or os.environ.get("BERTH_URL") or None
    token = token or os.environ.get("BERTH_TOKEN") or None
    if url is None or token is None:
        stored = load_login()
        url = url or stored.get("url")
        # The stored token only goes to the server it was stored for.
        if token is None and _same(stored.get("url"), url):
            token = stored.get("token")
    if not url:
        raise ConfigurationError(
            "no Berth server: pass url=, set BERTH_URL, or run `berth login URL`"
        )
    if not token:
        raise ConfigurationError(
            "no Berth token: pass token=, set BERTH_TOKEN, or run `berth login URL`"
        )
    return Connection(url=url.rstrip("/"), token=token)


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.rstrip("/") == b.rstrip("/")
