"""Checks of deploy/ (alert rules, dashboard, Kubernetes manifests) and docs/operating.md,
offline; the check that their metric names are the ones a running bridge exports is in
tests/integration/test_operating.py."""
