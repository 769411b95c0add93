"""Account data (global and per room), room tags, ignored users and read markers."""
