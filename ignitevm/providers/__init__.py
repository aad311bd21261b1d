"""Providers: each a small interface with one or more implementations."""
