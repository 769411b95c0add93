"""HTTP routes: parse the request, call a service, answer JSON."""
