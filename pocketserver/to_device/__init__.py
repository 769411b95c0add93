"""Send-to-device messaging: device inboxes, the to-device stream, its /sync part."""
