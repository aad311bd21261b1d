"""The ``ignite`` command line."""
