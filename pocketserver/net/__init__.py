"""Outgoing HTTP on a user's behalf (URL previews, push gateways), guarded against SSRF."""
