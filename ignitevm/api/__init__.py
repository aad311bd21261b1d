"""API objects (VM, Image, Kernel) in the ``ignite.weave.works/v1alpha4`` shape."""
