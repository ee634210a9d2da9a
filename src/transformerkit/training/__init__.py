"""Training: the paper's optimizer schedule (§5.3) and, later, the trainer."""
