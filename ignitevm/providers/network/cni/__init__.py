"""CNI: the standard container network plugins (bridge, host-local, portmap,
firewall…) driven per the CNI spec, one network namespace per VM.

``plugins`` runs one plugin, ``chain`` runs a conflist, ``conflist`` keeps the
network definitions, ``netns`` and ``tap`` make the VM's side, ``vm`` ties them
to a VM's folder (the record that makes every cleanup path possible), ``sweep``
removes what a lost namespace left behind.
"""
