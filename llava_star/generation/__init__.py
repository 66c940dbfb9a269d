"""What the generate stage shares with evaluation: the prompts and the model answerer."""
