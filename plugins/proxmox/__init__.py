"""Proxmox VE virtualization through proxmoxer (``hostbay[proxmox]``). Not implemented yet: this plugin loads and
contributes nothing."""
