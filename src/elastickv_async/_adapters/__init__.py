"""Adapters: one package per keyspace (DynamoDB, Redis, S3, SQS), each exporting ``SPEC``."""
