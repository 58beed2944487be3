"""Cluster backups: the snapshots of every Raft group decoded into one dump tree.

The entry point is :func:`.api.decode_cluster`; this package initialiser imports nothing so
that the CLI can register its subcommand without loading the engine.
"""
