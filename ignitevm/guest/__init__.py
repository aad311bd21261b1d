"""Guest-side programs: the initramfs init and the small static helpers."""
