"""What a Berth process holds while it runs: settings, database, cipher, engine clients."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy import literal, select, union_all
from sqlalchemy.orm import QueryableAttribute

from app.core.config import Settings
from app.core.db import Database
from app.engine.factory import DockerEngines
from app.engine.pool import EnginePool
from app.engine.protocol import Engine, EngineFactory
from app.security.crypto import Cipher, load_or_create_key


class AppContext:
    def __init__(
        self,
        settings: Settings,
        db: Database | None = None,
        *,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        self.settings = settings
        self.db = db or Database(settings.database_url)
        # Every engine client this process uses is built by this factory, so a test or a
        # benchmark can hand in another (a simulated engine, say).
        self.engine_factory: EngineFactory = engine_factory or DockerEngines()
        self.engines = EnginePool(self.engine_factory)
        self._engine_resolver: Callable[[str], Engine] | None = None
        self._cipher: Cipher | None = None
        # token hash -> (looked up at, token id, name, role, expires at, (project id, role)
        # grants): spares a query per request. Revocation is immediate in this process, within
        # PRINCIPAL_TTL in others.
        self.principals: dict[
            str, tuple[float, str, str, str, datetime | None, tuple[tuple[str, str], ...]]
        ] = {}

    @property
    def cipher(self) -> Cipher:
        if self._cipher is None:
            raise RuntimeError("the encryption key is not loaded yet (load_cipher at start-up)")
        return self._cipher

    def register_engine_resolver(self, resolver: Callable[[str], Engine]) -> None:
        """How a host id becomes its engine client. Hosts live above core, so the composition
        root registers it at start-up."""
        self._engine_resolver = resolver

    def engine_for_host(self, host_id: str) -> Engine:
        if self._engine_resolver is None:
            raise RuntimeError("no engine resolver is registered yet (runtime.prepare at start-up)")
        return self._engine_resolver(host_id)

    def load_cipher(self, *, encrypted: Iterable[QueryableAttribute[str | None]]) -> None:
        """Load the key; create it only while the database holds nothing encrypted.

        `encrypted` names every column that holds ciphertext. The domains that own them sit
        above core, so the composition root passes them in (`runtime.ENCRYPTED_COLUMNS`)."""
        with self.db.session(write=False) as session:
            found = session.execute(
                union_all(
                    *(select(literal(1)).where(column.is_not(None)) for column in encrypted)
                ).limit(1)
            ).first()
        self._cipher = load_or_create_key(
            self.settings.effective_key_file, may_create=found is None
        )

    def close(self) -> None:
        self.engines.close()
        self.db.dispose()
