"""Launchers that send training runs somewhere other than this process."""
