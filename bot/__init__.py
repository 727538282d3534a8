"""The conversation: CLI, cards, (later) commands, actions and the alert pipeline."""
