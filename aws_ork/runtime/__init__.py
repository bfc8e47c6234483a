"""Beside the stages: process plumbing (stop flag, logging, systemd notify, atomic files)."""
