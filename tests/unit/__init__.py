"""Pure unit tests: no root, no network, no libvirt."""
