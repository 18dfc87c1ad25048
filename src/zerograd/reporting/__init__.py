"""What a person sees of a run: progress on the terminal, plots and reports."""
