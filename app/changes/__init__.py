"""Four-eyes approvals and change windows: a write in a protected project becomes a change
request, applied as its author once another principal approves it (docs/changes.md)."""
