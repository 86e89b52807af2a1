"""Fault-injection suite (issue 9): kills, full disks, corrupt files and bad inputs against the
workbench's reliability and security properties. See docs/reliability.md for the property list."""
