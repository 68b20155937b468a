"""Berth: a control plane for fleets of Docker hosts."""
