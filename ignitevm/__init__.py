"""ignitevm: run OCI images as lightweight virtual machines."""

__version__ = "0.1.0"
