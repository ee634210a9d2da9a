"""Decoding: turning a trained model's distributions into sequences."""
