"""Operator surfaces: live panel, logs, metrics, systemd notifications."""
