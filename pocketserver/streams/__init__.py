"""Stream infrastructure below the feature packages: the notifier that wakes waiting
requests with stream positions, and the sync token that names those positions."""
