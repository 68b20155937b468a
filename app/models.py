"""Every table, imported in one place so that Alembic and the tests see the whole schema."""

from app.api.models import IdempotencyRecord
from app.audit.models import AuditEntry, AuditHead
from app.changes.models import ChangeRequest
from app.containers.models import Container, PortClaim
from app.core.db import Base
from app.events.models import Event
from app.hosts.models import Host
from app.images.models import Blob, Image, ImageTag, RegistryCheckCount
from app.operations.models import Operation, OperationLog
from app.projects.models import HostProject, Project
from app.registries.models import Registry
from app.secrets.models import Secret
from app.services.models import Service, ServiceRevision
from app.stacks.models import Stack
from app.tokens.models import ApiToken, TokenProjectRole
from app.workers.models import Lease, WorkerProcess

__all__ = [
    "ApiToken",
    "AuditEntry",
    "AuditHead",
    "Base",
    "Blob",
    "ChangeRequest",
    "Container",
    "Event",
    "Host",
    "HostProject",
    "IdempotencyRecord",
    "Image",
    "ImageTag",
    "Lease",
    "Operation",
    "OperationLog",
    "PortClaim",
    "Project",
    "Registry",
    "RegistryCheckCount",
    "Secret",
    "Service",
    "ServiceRevision",
    "Stack",
    "TokenProjectRole",
    "WorkerProcess",
]
