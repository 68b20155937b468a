"""The one part of the packaging pyproject.toml cannot say: migrations/ stays at the repository
root (where `alembic` in a checkout finds it, through alembic.ini) and travels inside the wheel
as the package `app._migrations`, so an installed Berth finds its migrations through its own
package (app/core/migrate.py) wherever it runs. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["app", "app.*"]),
        "app._migrations",
        "app._migrations.versions",
    ],
    package_dir={"app._migrations": "migrations"},
)
