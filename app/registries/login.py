"""Logging in to a registry for real, over the Docker Registry HTTP API v2 (Basic or token auth).

This talks to the registry, not to a Docker engine, so the check answers at once without
queueing work on a host.
"""

from __future__ import annotations

import re

import httpx

_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def check_login(
    url: str, username: str | None, password: str | None, *, timeout: float
) -> tuple[bool, str]:
    """(ok, detail). The detail never contains the password."""
    base = url.rstrip("/") + "/v2/"
    auth = (username, password) if username and password else None
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            first = client.get(base)
            if first.status_code == 200:
                return True, "the registry answered and needs no credentials"
            if first.status_code != 401:
                return False, f"{base} answered HTTP {first.status_code}; is this a registry?"
            challenge = first.headers.get("www-authenticate", "")
            if auth is None:
                return False, "the registry needs credentials and none are stored"
            scheme = challenge.split(" ", 1)[0].lower()
            if scheme == "basic":
                answer = client.get(base, auth=auth)
            elif scheme == "bearer":
                params = dict(_CHALLENGE.findall(challenge))
                realm = params.pop("realm", "")
                if not realm:
                    return False, "the registry's token challenge names no realm"
                token_response = client.get(realm, params=params, auth=auth)
                if token_response.status_code != 200:
                    return False, (
                        f"authentication failed: the token service refused user {username!r} "
                        f"(HTTP {token_response.status_code})"
                    )
                body = token_response.json()
                token = body.get("token") or body.get("access_token")
                answer = client.get(base, headers={"Authorization": f"Bearer {token}"})
            else:
                return False, f"unsupported authentication scheme {scheme!r}"
    except httpx.HTTPError as exc:
        return False, f"could not reach {base}: {type(exc).__name__}"
    if answer.status_code == 200:
        return True, f"logged in as {username!r}"
    if answer.status_code == 401:
        return False, f"authentication failed: the registry refused user {username!r}"
    return False, f"login answered HTTP {answer.status_code}"
