"""What both stages share: the CSV contract, the feature-cache format, config."""
