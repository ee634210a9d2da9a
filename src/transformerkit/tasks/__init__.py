"""Tasks: what a trained model is used for (translation, …)."""
