"""Application services (bridges and bots): registrations, authentication, pushing
events and forwarding queries (application service API)."""
