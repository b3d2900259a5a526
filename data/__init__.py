"""The demo dataset generator; generated or user data sits under this folder."""
