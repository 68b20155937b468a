"""Projects: who may see and change which services, stacks, containers, secrets and registry
credentials (docs/projects.md)."""
