"""libvirt-portfwd: port forwards that follow the libvirt VM lifecycle."""

__version__ = "0.1.0"
