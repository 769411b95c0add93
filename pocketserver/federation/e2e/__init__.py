"""End-to-end encryption over federation: serving our users' keys to other servers,
the cache of remote users' device lists, the E2EE EDUs, and our clients' key queries
and claims for remote users. :class:`pocketserver.federation.e2e.service.FederationE2e`
is the entry point."""
