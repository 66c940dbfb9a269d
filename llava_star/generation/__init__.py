"""What the generate stage shares with evaluation: the direct and hint prompts."""
