"""Restoring to a node: ``prepare-restore`` builds a Raft data directory from an encoded .fsm."""
