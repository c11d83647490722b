"""Shared pieces of the Queuing System port: settings, keys, console, embedded Redis, job events."""
