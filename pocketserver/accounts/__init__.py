"""Accounts: users, passwords, devices and access tokens."""
