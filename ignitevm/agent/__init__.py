"""The host side of the guest agent: framing, channels, exec and copy sessions."""
