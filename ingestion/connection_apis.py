"""Connect and disconnect a user's Oura account (issue 4; being written)."""
