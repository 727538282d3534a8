"""The money work, free of any chat platform: sources, ingest, matching, rules, runs."""
