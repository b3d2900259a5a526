"""Stage two: train a GRU on cached features, report, and predict."""
