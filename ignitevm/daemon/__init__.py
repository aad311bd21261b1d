"""``ignited``: the daemon that keeps a host's VMs in line with manifests."""
