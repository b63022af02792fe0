"""KVM virtualization through libvirt (``hostbay[kvm]``). The driver arrives with the KVM plugin work."""
